"""Running a filesystem's operations from whatever event loop the caller is on."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any, TypeVar

from anyio import CapacityLimiter, to_thread
from fsspec.spec import AbstractFileSystem

__all__ = ["Bridge"]

T = TypeVar("T")


class Bridge:
    """Calls one sync-mode fsspec filesystem from any number of caller event loops.

    Async implementations (s3fs, gcsfs, adlfs) run their coroutines on fsspec's own IO
    loop, which outlives every caller loop, so an instance is never "attached to a
    different loop". Blocking implementations (local, memory, …) run in worker threads.
    Cancelling the caller cancels the coroutine on the IO loop too.
    """

    def __init__(self, fs: AbstractFileSystem, threads: CapacityLimiter | None = None) -> None:
        self.fs = fs
        self.is_async = bool(fs.async_impl)
        self._threads = threads

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fs._<method>(...)`` on the IO loop, or run ``fs.<method>(...)`` in a thread."""
        if self.is_async:
            return await self.run(getattr(self.fs, "_" + method)(*args, **kwargs))
        return await self.thread(partial(getattr(self.fs, method), *args, **kwargs))

    async def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Await a coroutine of the filesystem's on its IO loop."""
        loop: asyncio.AbstractEventLoop = getattr(self.fs, "loop")  # noqa: B009 (async fs only)
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        return await asyncio.wrap_future(future)

    async def thread(self, function: Callable[[], T]) -> T:
        """Run blocking work (sync file objects, local I/O) in a worker thread."""
        return await to_thread.run_sync(function, limiter=self._threads)
