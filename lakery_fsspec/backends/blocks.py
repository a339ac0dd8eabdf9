"""A streaming writer that uploads an object in blocks, each with its own checksum."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from fsspec.asyn import sync

__all__ = ["BlockWriter"]

T = TypeVar("T")


class BlockWriter(ABC):
    """Cuts the bytes written into blocks of ``block_size`` and uploads each one as soon
    as it is full; ``commit`` uploads the rest and finishes the object.

    A Writer (see ``backends.base``): its methods block and run in a worker thread, so
    checksums are computed there, off every event loop, and requests run on the sync-mode
    filesystem's IO loop. Memory: the block being filled, at most one block plus one
    write (what is written is kept by reference until it is joined into a block).
    """

    def __init__(self, fs: Any, block_size: int) -> None:
        self._fs = fs
        self.block_size = block_size
        self._pieces: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self.blocks_sent = 0

    def write(self, data: bytes | memoryview, /) -> None:
        """Append bytes; upload every block that fills up."""
        if not len(data):
            return
        self._pieces.append(data)
        self._buffered += len(data)
        while self._buffered >= self.block_size:
            self._send_block(self._take(self.block_size))
            self.blocks_sent += 1

    def commit(self) -> None:
        """Upload what is left and finish the object."""
        self._finish(self._take(self._buffered))

    @abstractmethod
    def abort(self) -> None:
        """Give up; nothing of the object may remain afterwards."""

    @abstractmethod
    def _send_block(self, block: bytes) -> None:
        """Upload one full block (the ``blocks_sent``-th, counting from 0)."""

    @abstractmethod
    def _finish(self, last: bytes) -> None:
        """Upload the last, possibly short or empty, block and complete the object; with
        no block sent before, ``last`` is the whole object."""

    def _run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kw: Any) -> T:
        """Run a coroutine function of the filesystem on its IO loop and wait for it."""
        result: T = sync(self._fs.loop, function, *args, **kw)  # pyright: ignore[reportAssignmentType]
        return result

    def _take(self, size: int) -> bytes:
        """The next ``size`` buffered bytes as one block (one copy, none for a single
        whole piece of bytes)."""
        taken: list[bytes | memoryview] = []
        total = 0
        while total < size:
            piece = self._pieces.popleft()
            if total + len(piece) > size:
                cut = size - total
                view = memoryview(piece)
                taken.append(view[:cut])
                self._pieces.appendleft(view[cut:])
                total = size
            else:
                taken.append(piece)
                total += len(piece)
        self._buffered -= total
        if len(taken) == 1 and isinstance(taken[0], bytes):
            return taken[0]
        return b"".join(taken)
