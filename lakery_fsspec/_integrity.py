"""Checking bytes against the size and hash recorded for them: one incremental checker for
reads, ``verify`` and ``copy``, and the rule for hashing off the event loop that uploads'
checksums follow too."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from lakery_fsspec._errors import IntegrityError

if TYPE_CHECKING:
    from lakery_fsspec._pointer import FsspecPointer

__all__ = ["INLINE_SIZE", "Checker", "computed", "hasher"]

T = TypeVar("T")

INLINE_SIZE = 256 * 2**10
"""Bytes hashed on the caller's loop; more go to a worker thread, which keeps the loop
free and lets objects hash on several cores (hashlib releases the GIL)."""


async def computed(function: Callable[[bytes | memoryview], T], data: bytes | memoryview) -> T:
    """``function(data)`` (a hash, a checksum): on the caller's loop for small data, else
    in a worker thread."""
    if len(data) <= INLINE_SIZE:
        return function(data)
    return await asyncio.to_thread(partial(function, data))


class Checker:
    """An object's bytes checked as they arrive against the size and hash recorded for
    them (either may be missing: older pointers, paths without a hash)."""

    def __init__(self, content_hash: str | None, algorithm: str | None, size: int | None) -> None:
        self.expected = (content_hash or "").lower()
        self.size = size
        self.seen = 0
        self._hash = hasher(algorithm) if content_hash else None

    @classmethod
    def of(cls, pointer: FsspecPointer) -> Checker:
        """A checker for what ``pointer`` recorded."""
        return cls(
            pointer.get("content_hash"),
            pointer.get("content_hash_algorithm"),
            pointer.get("content_size"),
        )

    async def update(self, chunk: bytes | memoryview) -> bool:
        """Account for the next chunk; False once more bytes arrived than recorded."""
        self.seen += len(chunk)
        if self.overrun:
            return False
        if self._hash is not None:
            await computed(self._hash.update, chunk)
        return True

    @property
    def overrun(self) -> bool:
        """Whether more bytes arrived than were recorded."""
        return self.size is not None and self.seen > self.size

    @property
    def short(self) -> bool:
        """Whether fewer bytes arrived than were recorded (once all have)."""
        return self.size is not None and self.seen < self.size

    @property
    def algorithm(self) -> str | None:
        """The hash's name, or None where nothing is hashed."""
        return None if self._hash is None else str(self._hash.name)

    def actual(self) -> str | None:
        """The hash of every byte seen, or None where nothing is hashed."""
        return None if self._hash is None else str(self._hash.hexdigest())

    def check(self, where: str) -> None:
        """IntegrityError naming ``where`` unless the bytes seen are what was recorded."""
        if self.overrun:
            raise _corrupt(where, f"more than the {self.size} bytes recorded")
        if self.short:
            raise _corrupt(where, f"{self.seen} bytes where {self.size} were recorded")
        if (actual := self.actual()) is not None and actual != self.expected:
            raise _corrupt(where, f"{self.algorithm} {actual} != {self.expected}")


def _corrupt(where: str, what: str) -> IntegrityError:
    return IntegrityError(f"Object {where} is corrupt: {what}.")


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
