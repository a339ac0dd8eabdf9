"""The storage data FsspecStorage records for each object, and its validation."""

from __future__ import annotations

import json
import re
from typing import Any, NotRequired, TypedDict

from lakery_fsspec._paths import path_problem

__all__ = ["FsspecPointer", "check_pointer", "parse_pointer"]

_PROTOCOL = re.compile(r"[a-z][a-z0-9+.-]*")
_CONTROL = re.compile("[\x00-\x1f\x7f]")


class FsspecPointer(TypedDict):
    """Where an object lives: ``{"protocol": "s3", "root": "bucket/lake", "path": "ab/ab12.json"}``.

    Never holds credentials or storage options. Readers tolerate extra keys.
    """

    protocol: str
    """The target filesystem's canonical fsspec protocol (``"file"``, ``"s3"``, ``"gcs"``, …)."""
    root: str
    """The storage root as that filesystem names it (``fs._strip_protocol(url)``)."""
    path: str
    """The path the router returned, relative to ``root``."""
    content_hash: NotRequired[str]
    """The hash of the object's bytes (hex), as labox computed it when writing."""
    content_hash_algorithm: NotRequired[str]
    """The ``hashlib`` name of that hash (``"sha256"``)."""
    content_size: NotRequired[int]
    """The object's size in bytes."""


def parse_pointer(text: str | bytes) -> FsspecPointer:
    """Parse and validate serialized storage data; raise ValueError on any other shape."""
    try:
        data = json.loads(text)
    except (ValueError, TypeError, RecursionError) as error:
        raise _pointer_error(text, f"it is not JSON ({error})") from None
    return check_pointer(data, text)


def check_pointer(data: object, text: str | bytes | None = None) -> FsspecPointer:
    """Validate a pointer's shape and return it; ValueError names what is wrong."""
    shown = text if text is not None else repr(data)
    if not isinstance(data, dict):
        raise _pointer_error(shown, "it is not a JSON object")
    pointer: dict[str, Any] = data  # pyright: ignore[reportUnknownVariableType]
    for key in ("protocol", "root", "path"):
        if not isinstance(pointer.get(key), str):
            raise _pointer_error(shown, f"{key!r} is missing or not a string")
    if not _PROTOCOL.fullmatch(pointer["protocol"]):
        raise _pointer_error(shown, "'protocol' is not a protocol name")
    if problem := _root_problem(pointer["root"]):
        raise _pointer_error(shown, f"'root' {problem}")
    if problem := path_problem(pointer["path"]):
        raise _pointer_error(shown, f"'path' is unsafe: {problem}")
    # Optional integrity extras: absent or null means "not recorded".
    for key in ("content_hash", "content_hash_algorithm"):
        if pointer.get(key) is not None and not isinstance(pointer[key], str):
            raise _pointer_error(shown, f"{key!r} is not a string")
    size = pointer.get("content_size")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool) or size < 0):
        raise _pointer_error(shown, "'content_size' is not a number of bytes")
    return pointer  # type: ignore[return-value]


def _root_problem(root: str) -> str | None:
    if not root.strip("/"):
        return "is empty"
    if _CONTROL.search(root):
        return "contains a control character"
    if ".." in root.split("/"):
        return "has a '..' segment"
    return None


def _pointer_error(text: str | bytes, why: str) -> ValueError:
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    shown = text if len(text) <= 200 else text[:200] + "…"
    return ValueError(f"Invalid FsspecStorage data {shown!r}: {why}.")
