"""Checking bytes read against the size and hash a pointer recorded when they were written."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

from lakery_fsspec.errors import IntegrityError

if TYPE_CHECKING:
    from lakery_fsspec.pointer import FsspecPointer

__all__ = ["Checker"]


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
        self._hash = None
        if self._expected and algorithm and algorithm in hashlib.algorithms_available:
            self._hash = hashlib.new(algorithm)
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
        if self._hash is not None and self._hash.hexdigest() != self._expected:
            raise self._error(f"{self._hash.name} {self._hash.hexdigest()} != {self._expected}")

    def _error(self, what: str) -> IntegrityError:
        return IntegrityError(f"Object {self._where} is corrupt: {what}.")
