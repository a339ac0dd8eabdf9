"""Exceptions FsspecStorage raises besides ValueError and labox's NoStorageData."""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator
from typing import NamedTuple

__all__ = [
    "IntegrityError",
    "ReadOnlyStorageError",
    "ServerAnswer",
    "StorageUnavailableError",
    "exception_chain",
    "server_answer",
    "unavailable",
]


class ReadOnlyStorageError(RuntimeError):
    """A write was attempted on a storage created with ``router=None``."""


class IntegrityError(Exception):
    """Bytes differ from the checksum they should have: on a write, the service (or the
    storage, comparing what the service reports) refused an upload whose body was
    damaged in transit ("checksum mismatch", nothing kept at the final path); with
    ``verify_reads=True``, the bytes read differ from the size or hash recorded."""


class StorageUnavailableError(OSError):
    """The backend did not answer in time, refused or dropped the connection, or kept
    failing with a server error (HTTP 5xx, throttling) after its client's retries.

    Transient by nature: the same operation may succeed once the backend is back. The
    message names the storage operation and the object's URL (``protocol://root/path``),
    never storage options or credentials; the backend's own exception is the
    ``__cause__``.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.operation: str | None = None
        self.url: str | None = None

    def locate(self, operation: str, url: str) -> None:
        """Record which operation on which object failed, unless already recorded."""
        if self.operation is None:
            self.operation, self.url = operation, url

    def __str__(self) -> str:
        if self.operation is None:
            return self.reason
        return f"{self.operation} {self.url} failed: {self.reason}"


# Transport-level exception classes of fsspec and its own HTTP client (aiohttp), matched
# by name so that no optional package has to be imported here; each protocol's spec adds
# its own client's (``ProtocolSpec.transient``: botocore, azure-core, paramiko, …).
_TRANSIENT_CLASSES = frozenset(
    {
        "ClientConnectionError",  # aiohttp: refused, reset, server disconnected, …
        "ClientPayloadError",  # aiohttp: the body was cut off
        "ServerTimeoutError",  # aiohttp
        "IncompleteReadError",  # asyncio, botocore
        "FSTimeoutError",  # fsspec
    }
)
_TRANSIENT_ERRNOS = frozenset(
    {
        errno.EBUSY,  # s3fs: SlowDown, ServiceUnavailable
        errno.EREMOTEIO,  # s3fs: InternalError
        errno.ETIMEDOUT,
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EPIPE,
    }
)
_TRANSIENT_STATUS = frozenset({408, 429})


def unavailable(
    error: Exception, transient: Callable[[BaseException], bool] | None = None
) -> StorageUnavailableError | None:
    """The StorageUnavailableError to raise ``from error`` (an exception of a backend
    call) if it, or any exception it was raised from, is a timeout, a connection failure,
    an HTTP 5xx/408/429 answer or one ``transient`` accepts; None for any other error,
    which propagates as is."""
    chain = exception_chain(error, groups=False)
    if any(_is_transient_one(item) or (transient and transient(item)) for item in chain):
        name = type(error).__name__
        return StorageUnavailableError(f"{name}: {error}" if str(error) else name)
    return None


def exception_chain(error: BaseException, *, groups: bool = True) -> Iterator[BaseException]:
    """The error, its causes and contexts (and, with ``groups``, the members of exception
    groups), each once."""
    seen: set[int] = set()
    todo = [error]
    while todo:
        item = todo.pop(0)
        if id(item) in seen or len(seen) > 50:
            continue
        seen.add(id(item))
        yield item
        todo.extend(x for x in (item.__cause__, item.__context__) if x is not None)
        if groups and isinstance(item, BaseExceptionGroup):
            todo.extend(item.exceptions)  # pyright: ignore[reportUnknownMemberType]


def _is_transient_one(error: BaseException) -> bool:
    if isinstance(error, TimeoutError | ConnectionError):
        return True
    if isinstance(error, OSError) and error.errno in _TRANSIENT_ERRNOS:
        return True
    if any(cls.__name__ in _TRANSIENT_CLASSES for cls in type(error).__mro__):
        return True
    status = _answer_of(error).status
    # 501 Not Implemented is an answer, not an outage: the server will never do it.
    return status is not None and (status in _TRANSIENT_STATUS or (status >= 500 and status != 501))


class ServerAnswer(NamedTuple):
    """What a server answered to a failed request: its HTTP status and error code
    (either None where the client's exception does not carry it)."""

    status: int | None
    code: str | None


_NO_ANSWER = ServerAnswer(None, None)


def server_answer(error: BaseException) -> ServerAnswer:
    """The HTTP status and error code behind ``error``, read from the first exception in
    its chain (causes and contexts) that carries a status, whatever exception type a
    client translated it into: botocore's ``ClientError`` (under s3fs's OSErrors),
    azure-core's ``HttpResponseError``, aiohttp's ``ClientResponseError``, gcsfs's
    ``HttpError``."""
    for item in exception_chain(error, groups=False):
        if (answer := _answer_of(item)).status is not None:
            return answer
    return _NO_ANSWER


def _answer_of(error: BaseException) -> ServerAnswer:
    """The status and code one exception carries, in any of the clients' conventions."""
    response = getattr(error, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        metadata = response.get("ResponseMetadata")  # pyright: ignore[reportUnknownMemberType]
        details = response.get("Error")  # pyright: ignore[reportUnknownMemberType]
        status = metadata.get("HTTPStatusCode") if isinstance(metadata, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        code = details.get("Code") if isinstance(details, dict) else None  # pyright: ignore[reportUnknownMemberType, reportUnknownVariableType]
        if isinstance(status, int):
            return ServerAnswer(status, str(code) if code else None)  # pyright: ignore[reportUnknownArgumentType]
    for name in ("status_code", "status", "code"):  # azure-core, aiohttp, gcsfs
        value = getattr(error, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value < 600:
            code = getattr(error, "error_code", None)  # azure-core
            return ServerAnswer(value, str(code) if code else None)
    return _NO_ANSWER
