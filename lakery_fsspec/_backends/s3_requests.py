"""S3 requests read by what the server answered, and the optional headers a server may refuse.

s3fs translates botocore's errors by error code and, for a 412, by the body naming the
condition; S3-compatible servers word their answers differently (SeaweedFS answers a
bare ``412 PreconditionFailed``). Every S3 request of the backend goes through ``send``,
which decides by the HTTP status and error code the server sent:

- 412 to a create-only request (``If-None-Match: *``): ``FileExistsError``, "already stored";
- 409 ``ConditionalRequestConflict``: ``Conflict``, "raced, look again" (``looking_again``);
- 404 / 403: ``FileNotFoundError`` / ``PermissionError``;
- 501 ``NotImplemented``, 400 ``InvalidArgument``/``InvalidRequest`` to a request carrying
  ``If-None-Match`` or ``x-amz-checksum-*``: the same request is sent without them, and if
  that succeeds, the server's ``Features`` drop them from then on (one WARNING each).
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, TypeVar

from lakery_fsspec._errors import ServerAnswer, server_answer

__all__ = [
    "CHECKSUMS",
    "CONDITIONS",
    "FALLBACK_LOG",
    "Conflict",
    "Features",
    "looking_again",
    "send",
]

T = TypeVar("T")

FALLBACK_LOG = logging.getLogger("lakery_fsspec.fallback")
"""Where a storage says what it gave up on a server that refused it (``check`` shows it)."""

CONDITIONS = "conditions"
CHECKSUMS = "checksums"
_OPTIONAL = {
    "IfNoneMatch": CONDITIONS,
    "ChecksumSHA256": CHECKSUMS,
    "ChecksumCRC32": CHECKSUMS,
    "ChecksumAlgorithm": CHECKSUMS,
    "ChecksumType": CHECKSUMS,
}
"""botocore parameters a server may refuse, by the feature they belong to."""
_LOST = {
    CONDITIONS: (
        "it refused conditional writes (If-None-Match: *), so an existing object is "
        "checked for before it is written and two writers of the same content may both "
        "write it (same bytes; a versioned bucket keeps both)"
    ),
    CHECKSUMS: (
        "it refused upload checksums (x-amz-checksum-*), so uploads go without them and "
        "a body damaged in transit is no longer refused by the server"
    ),
}
_REFUSED = frozenset(
    {
        ServerAnswer(501, "NotImplemented"),
        ServerAnswer(400, "InvalidArgument"),
        ServerAnswer(400, "InvalidRequest"),
    }
)
"""Answers of a server that does not do what a request asked for, or says it is malformed."""
_LOOKS = 5
"""How many times a raced create-only request (409) is looked at again before failing."""


class Conflict(OSError):
    """S3 answered 409 ConditionalRequestConflict: a conditional write raced another write
    of the same key (AWS says to retry; the other write may be a writer of the same content)."""


class Features:
    """The optional request headers one server accepts, learned as requests are refused:
    one per storage backend, shared by its event loops and worker threads."""

    def __init__(self, where: str) -> None:
        self.where = where
        self.refused: frozenset[str] = frozenset()
        self._lock = threading.Lock()

    def accepts(self, feature: str) -> bool:
        """Whether requests still carry ``feature`` (CONDITIONS or CHECKSUMS)."""
        return feature not in self.refused

    def strip(self, parameters: dict[str, Any]) -> dict[str, Any]:
        """``parameters`` without those of the features the server refused."""
        if not self.refused:
            return parameters
        return {k: v for k, v in parameters.items() if _OPTIONAL.get(k) not in self.refused}

    def lose(self, features: set[str]) -> None:
        """Stop sending ``features``; say so once for each."""
        with self._lock:
            new = features - self.refused
            self.refused |= new
        for feature in sorted(new):
            FALLBACK_LOG.warning("%s: %s.", self.where, _LOST[feature])


async def send(fs: Any, method: str, features: Features | None = None, **parameters: Any) -> Any:
    """``fs._call_s3(method, **parameters)`` with its failure decided by the server's answer
    (see the module's docstring); ``features`` are the server's (None: nothing to drop)."""
    if features is not None:
        parameters = features.strip(parameters)
    try:
        return await fs._call_s3(method, **parameters)
    except OSError as error:
        answer = server_answer(error)
        if features is None or answer not in _REFUSED or not _optional(parameters):
            _raise(error, answer, parameters)
        return await _without_optional(fs, method, features, parameters, error)


async def _without_optional(  # noqa: RET503 - ends in _raise, which never returns
    fs: Any, method: str, features: Features, parameters: dict[str, Any], error: OSError
) -> Any:
    """Send the refused request again without its conditions, or its checksums, or both;
    the features the first success went without are lost, and if none succeeds, ``error``
    stands (a 400 may mean another mistake)."""
    present = [f for f in (CONDITIONS, CHECKSUMS) if f in _optional(parameters)]
    tries = [{feature} for feature in present] + ([set(present)] if len(present) > 1 else [])
    for dropped in tries:
        if CONDITIONS in dropped and await _exists(fs, parameters):
            # Without its condition, a create-only request looks first.
            raise _already_stored(parameters) from error
        kept = {k: v for k, v in parameters.items() if _OPTIONAL.get(k) not in dropped}
        try:
            result = await fs._call_s3(method, **kept)
        except OSError as again:
            if (answer := server_answer(again)) in _REFUSED:
                continue
            _raise(again, answer, kept)
        features.lose(dropped)
        return result
    _raise(error, server_answer(error), parameters)


async def looking_again(
    request: Callable[[], Awaitable[T]],
    exists: Callable[[], Awaitable[bool]],
    timeout: float | None,  # noqa: ASYNC109 - the storage's, bounding the looks as a whole
) -> T:
    """Run a create-only ``request``; where it raced another write of the key (409
    ``Conflict``), look again: FileExistsError once the object is there, else the request
    again, a bounded number of times within ``timeout`` (then the Conflict)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    for look in range(_LOOKS):
        try:
            return await request()
        except Conflict as conflict:
            if await exists():
                raise FileExistsError(errno.EEXIST, "already stored (after a race)") from conflict
            pause = 0.05 * 2**look
            late = deadline is not None and time.monotonic() + pause > deadline
            if look == _LOOKS - 1 or late:
                raise
            await asyncio.sleep(pause)
    raise AssertionError("unreachable")  # pragma: no cover


def _optional(parameters: dict[str, Any]) -> set[str]:
    return {_OPTIONAL[k] for k in parameters if k in _OPTIONAL}


def _raise(error: OSError, answer: ServerAnswer, parameters: dict[str, Any]) -> NoReturn:
    """Raise the exception that says what the server answered, from ``error``."""
    decided = _decided(error, answer, parameters)
    if decided is error:
        raise error
    raise decided from error


def _decided(error: OSError, answer: ServerAnswer, parameters: dict[str, Any]) -> OSError:
    """The exception that says what the server answered: ``error`` if it says so already."""
    where = "/".join(str(parameters[k]) for k in ("Bucket", "Key") if k in parameters)
    status, code = answer
    if status == 412 and "IfNoneMatch" in parameters:
        return _already_stored(parameters)
    if status == 409 and code == "ConditionalRequestConflict":
        return Conflict(errno.EAGAIN, f"{code}: a concurrent write of the same key", where)
    if status == 404 and not isinstance(error, FileNotFoundError):
        return FileNotFoundError(errno.ENOENT, f"{code or 404}: {error}", where)
    if status == 403 and not isinstance(error, PermissionError):
        return PermissionError(errno.EACCES, f"{code or 403}: {error}", where)
    return error


def _already_stored(parameters: dict[str, Any]) -> FileExistsError:
    where = f"{parameters.get('Bucket')}/{parameters.get('Key')}"
    return FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), where)


async def _exists(fs: Any, parameters: dict[str, Any]) -> bool:
    try:
        await send(fs, "head_object", Bucket=parameters["Bucket"], Key=parameters["Key"])
    except FileNotFoundError:
        return False
    return True
