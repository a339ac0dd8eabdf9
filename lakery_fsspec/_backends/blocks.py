"""A streaming upload in blocks, each with its own checksum, on the caller's event loop."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from lakery_fsspec._bridge import cleanup

if TYPE_CHECKING:
    from lakery_fsspec._bridge import Bridge

__all__ = ["BlockWriter", "upload_blocks", "whole"]

T = TypeVar("T")
Work = Callable[[Any], Coroutine[Any, Any, T]]
"""A request: a coroutine function of the filesystem the bridge hands it."""


class BlockWriter(ABC):
    """Cuts the bytes written into blocks of ``block_size`` and uploads each one as soon
    as it is full; ``commit`` uploads the rest and finishes the object.

    Every request goes through the backend's bridge (``Bridge.run``: the caller's own
    copy of the filesystem, the storage's timeout), and checksums are computed off the
    loop (``_integrity.computed``). One block travels while the caller gathers the next
    one; a block waits for the one before it, so blocks arrive in order and memory stays
    at two blocks (plus what is written: kept by reference until it is joined into a
    block). A failed upload is raised by the next step.
    """

    hold_full_block: ClassVar[bool] = False
    """Whether a full block waits for the next write before it goes, so that a stream
    ending on a block boundary ends with that block in ``commit`` (GCS: no empty last
    request)."""

    def __init__(self, io: Bridge, block_size: int) -> None:
        self.io = io
        self.block_size = block_size
        self._pieces: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._in_flight: asyncio.Future[Any] | None = None

    async def write(self, data: bytes | memoryview, /) -> None:
        """Append bytes; upload every block that fills up."""
        if not len(data):
            return
        if not isinstance(data.obj if isinstance(data, memoryview) else data, bytes):
            data = bytes(data)  # kept until joined: never a view of memory the caller reuses
        self._pieces.append(data)
        self._buffered += len(data)
        while self._buffered > self.block_size or (
            self._buffered == self.block_size and not self.hold_full_block
        ):
            await self._send_block(self._take(self.block_size))

    async def commit(self) -> None:
        """Upload what is left and finish the object."""
        await self._finish(self._take(self._buffered))
        await self._settle()

    async def abort(self) -> None:
        """Give up; nothing of the object may remain. A block still travelling is
        cancelled and waited for before the clean-up's requests."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.cancel()
            with contextlib.suppress(BaseException):
                await in_flight
        await self._discard()

    @abstractmethod
    async def _send_block(self, block: bytes) -> None:
        """Upload one full block (typically: its checksum, then ``_start``)."""

    @abstractmethod
    async def _finish(self, last: bytes) -> None:
        """Upload the last, possibly short or empty, block and complete the object; with
        no block sent before, ``last`` is the whole object."""

    @abstractmethod
    async def _discard(self) -> None:
        """Remove whatever was uploaded (no upload is in flight any more)."""

    async def _start(self, work: Work[Any]) -> None:
        """Start the request ``work`` once the one in flight is over; do not wait for it."""
        await self._settle()
        self._in_flight = asyncio.ensure_future(self.io.run(work))

    async def _settle(self) -> None:
        """Wait for the request in flight; raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            await in_flight

    async def _run(self, work: Work[T]) -> T:
        """The request ``work``, after the one in flight."""
        await self._settle()
        return await self.io.run(work)

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


async def upload_blocks(
    writer: BlockWriter, stream: AsyncIterable[bytes | memoryview], url: str
) -> None:
    """Send ``stream`` through ``writer`` and finish the object; on any failure (of the
    stream too) the upload is aborted, shielded from cancellation."""
    try:
        async for chunk in stream:
            await writer.write(chunk)
        await writer.commit()
    except BaseException:
        await cleanup(writer.abort(), f"abort the upload to {url}")
        raise


async def whole(data: bytes, piece: int) -> AsyncIterator[bytes | memoryview]:
    """``data`` as a stream of views of ``piece`` bytes (no copies)."""
    view = memoryview(data)
    for start in range(0, len(view), piece):
        yield view[start : start + piece]
