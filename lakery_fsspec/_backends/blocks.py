"""A streaming writer that uploads an object in blocks, each with its own checksum."""

from __future__ import annotations

from abc import ABC, abstractmethod
from asyncio import run_coroutine_threadsafe
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from fsspec.asyn import sync

from lakery_fsspec._backends.base import cleanup
from lakery_fsspec._writers import SerialWriter

if TYPE_CHECKING:
    from lakery_fsspec._bridge import Bridge

__all__ = ["BlockWriter", "upload_whole"]

T = TypeVar("T")


class BlockWriter(ABC):
    """Cuts the bytes written into blocks of ``block_size`` and uploads each one as soon
    as it is full; ``commit`` uploads the rest and finishes the object.

    A Writer (see ``lakery_fsspec._writers``): its methods block and run in a worker thread, so
    checksums are computed there, off every event loop, and requests run on the sync-mode
    filesystem's IO loop. One block travels while the caller gathers the next one and its
    checksum is computed (``_start``); a block waits for the one before it, so blocks
    arrive in order and memory stays at two blocks (plus one write: what is written is
    kept by reference until it is joined into a block). A failed upload is raised by the
    next step.
    """

    hold_full_block: ClassVar[bool] = False
    """Whether a full block waits for the next write before it goes, so that a stream
    ending on a block boundary ends with that block in ``commit`` (GCS: no empty last
    request)."""

    def __init__(self, fs: Any, block_size: int) -> None:
        self._fs = fs
        self.block_size = block_size
        self._pieces: deque[bytes | memoryview] = deque()
        self._buffered = 0
        self._in_flight: Future[Any] | None = None

    def write(self, data: bytes | memoryview, /) -> None:
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
            self._send_block(self._take(self.block_size))

    def commit(self) -> None:
        """Upload what is left and finish the object."""
        self._finish(self._take(self._buffered))
        self._settle()

    def abort(self) -> None:
        """Give up; nothing of the object may remain. A block still travelling is
        cancelled first (its cancellation is scheduled before the clean-up's requests)."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.cancel()
        self._discard()

    @abstractmethod
    def _send_block(self, block: bytes) -> None:
        """Upload one full block (typically: its checksum, then ``_start``)."""

    @abstractmethod
    def _finish(self, last: bytes) -> None:
        """Upload the last, possibly short or empty, block and complete the object; with
        no block sent before, ``last`` is the whole object."""

    @abstractmethod
    def _discard(self) -> None:
        """Remove whatever was uploaded (no upload is in flight any more)."""

    def _start(self, function: Callable[..., Coroutine[Any, Any, Any]], *args: Any) -> None:
        """Start ``function(*args)`` on the filesystem's IO loop once the upload in flight
        is over, and return without waiting for it."""
        self._settle()
        self._in_flight = run_coroutine_threadsafe(function(*args), self._fs.loop)

    def _settle(self) -> None:
        """Wait for the upload in flight; raise its error."""
        in_flight, self._in_flight = self._in_flight, None
        if in_flight is not None:
            in_flight.result()

    def _run(self, function: Callable[..., Coroutine[Any, Any, T]], *args: Any, **kw: Any) -> T:
        """Run a coroutine function of the filesystem on its IO loop, after the upload in
        flight, and wait for it."""
        self._settle()
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


async def upload_whole(bridge: Bridge, writer: BlockWriter, data: bytes, url: str) -> None:
    """Upload a whole object through a block writer, one worker-thread step per block
    (each bounded by the bridge's timeout); on any failure the upload is aborted."""
    serial = SerialWriter(lambda: writer)
    try:
        await bridge.thread(serial.open)
        view = memoryview(data)
        for start in range(0, len(view), writer.block_size):
            await bridge.thread(partial(serial.write, view[start : start + writer.block_size]))
        await bridge.thread(serial.commit)
    except BaseException:
        await cleanup(bridge.thread(serial.abort), f"abort the upload to {url}")
        raise
