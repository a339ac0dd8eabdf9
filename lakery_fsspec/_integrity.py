"""Checking bytes read against the size and hash a pointer recorded when they were written."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any

from lakery_fsspec._errors import IntegrityError

if TYPE_CHECKING:
    from lakery_fsspec._pointer import FsspecPointer

__all__ = ["Checker", "hasher"]


class Checker:
    """Feeds on an object's bytes as they are read; raises IntegrityError on a mismatch.

    Checks what the pointer recorded: its size as soon as too many bytes arrive, and its
    size and hash at the end. A pointer without them (older writers) passes unchecked.
    """

    def __init__(self, pointer: FsspecPointer, where: str) -> None:
        self._where = where
        self._size = pointer.get("content_size")
        self._expected = pointer.get("content_hash")
        algorithm = pointer.get("content_hash_algorithm")
        self._hash = hasher(algorithm) if self._expected else None
        self._seen = 0

    def update(self, chunk: bytes) -> None:
        """Account for the next chunk."""
        self._seen += len(chunk)
        if self._size is not None and self._seen > self._size:
            raise self._error(f"more than the {self._size} bytes recorded")
        if self._hash is not None:
            self._hash.update(chunk)

    def finish(self) -> None:
        """Check the whole object once every chunk has been seen."""
        if self._size is not None and self._seen != self._size:
            raise self._error(f"{self._seen} bytes where {self._size} were recorded")
        if self._hash is not None and self._hash.hexdigest() != str(self._expected).lower():
            raise self._error(f"{self._hash.name} {self._hash.hexdigest()} != {self._expected}")

    def _error(self, what: str) -> IntegrityError:
        return IntegrityError(f"Object {self._where} is corrupt: {what}.")


def hasher(algorithm: str | None) -> Any:
    """A fresh hashlib object for ``algorithm``, or None if it cannot be checked here
    (unknown, disabled by the platform, or of variable length like shake_128)."""
    if not algorithm:
        return None
    try:
        made = hashlib.new(algorithm)
    except (ValueError, TypeError):
        return None
    return made if made.digest_size else None
