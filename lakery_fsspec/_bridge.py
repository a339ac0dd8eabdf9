"""Running a filesystem's operations from whatever event loop the caller is on."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import threading
import weakref
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar

from anyio import CancelScope, move_on_after, to_thread
from anyio.lowlevel import checkpoint_if_cancelled
from fsspec.spec import AbstractFileSystem

from lakery_fsspec._errors import StorageUnavailableError, unavailable

if TYPE_CHECKING:
    from lakery_fsspec._loops import LoopInstances

__all__ = ["Bridge", "Reconnect", "cleanup", "in_daemon_thread", "timed_out"]

T = TypeVar("T")

_LOG = logging.getLogger("lakery_fsspec")


class Reconnect(NamedTuple):
    """How a bridge replaces a filesystem whose connection closed for good (sshfs
    connects when made and never again): ``closed(fs)`` tells, without I/O, and
    ``fresh(fs)`` makes a connected replacement (blocking: it runs in a worker thread)."""

    closed: Callable[[Any], bool]
    fresh: Callable[[Any], Any]


class Bridge:
    """Calls one sync-mode fsspec filesystem from any number of caller event loops.

    Async implementations (s3fs, gcsfs, adlfs) run their coroutines on the caller's own
    loop through a copy of the filesystem made for that loop (``loop_instances``), or
    without one on fsspec's IO loop, which outlives every caller loop, so an instance is
    never "attached to a different loop". Blocking implementations (local, memory, …)
    and sync file objects run in worker threads.

    ``timeout`` (seconds, None for none) bounds each call: a coroutine still running is
    cancelled (on whichever loop it runs); a worker thread cannot be stopped, so it is
    left to finish in the background (``_writers.SerialWriter`` keeps that safe). Either
    way the call raises StorageUnavailableError. Cancelling the caller cancels the
    coroutine too, but waits for a worker thread (at most ``timeout``).

    Timeouts, connection failures and server errors from the backend become
    StorageUnavailableError raised from the original (``transient`` names more, for a
    client whose errors the generic rules do not know); every other exception (missing
    objects, permissions, cancellation, …) propagates unchanged. With ``reconnect``, a
    filesystem whose connection closed is replaced before the next call.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        timeout: float | None = None,
        loop_instances: LoopInstances | None = None,
        transient: Callable[[BaseException], bool] | None = None,
        reconnect: Reconnect | None = None,
    ) -> None:
        self.fs = fs
        self.is_async = bool(fs.async_impl)
        self.timeout = timeout
        self._loop_instances = loop_instances
        self._transient = transient
        self._reconnect = reconnect
        self._lock = threading.Lock()

    async def call(self, method: str, /, *args: Any, **kwargs: Any) -> Any:
        """Await ``fs._<method>(...)``, or run ``fs.<method>(...)`` in a worker thread."""
        if self.is_async:
            return await self.run(lambda fs: getattr(fs, "_" + method)(*args, **kwargs))
        return await self.thread(partial(getattr(self.fs, method), *args, **kwargs))

    async def run(self, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        """Await ``work(fs)`` for an async filesystem: on the caller's loop with its own
        copy of the filesystem, or on fsspec's IO loop with the shared instance."""
        try:
            if self.timeout is None:  # the common case, without a cancel scope's cost
                return await self._run(work)
            with move_on_after(self.timeout):
                return await self._run(work)
        except Exception as error:
            if (wrapped := unavailable(error, self._transient)) is None:
                raise
            raise wrapped from error
        raise self._timed_out()

    async def _run(self, work: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        if self._loop_instances is not None:
            return await work(await self._loop_instances.get())
        if self._reconnect is not None and self._reconnect.closed(self.fs):
            await to_thread.run_sync(self._replace, self.fs, abandon_on_cancel=True)
        loop: asyncio.AbstractEventLoop = getattr(self.fs, "loop")  # noqa: B009 (async fs only)
        future = asyncio.run_coroutine_threadsafe(work(self.fs), loop)
        # Cancelling the wrapper cancels the task on the IO loop.
        return await asyncio.wrap_future(future)

    async def thread(self, function: Callable[[], T]) -> T:
        """Run blocking work (sync file objects, local I/O) in a worker thread."""
        try:
            if self.timeout is None:
                return await _in_worker_thread(_workers_for(self.fs), function)
            limiter = to_thread.current_default_thread_limiter()
            # Shielded: the caller's cancellation waits for the thread, as without a
            # timeout; only the deadline abandons it.
            with CancelScope(shield=True), move_on_after(self.timeout):
                async with limiter:
                    return await in_daemon_thread(function)
        except Exception as error:
            await checkpoint_if_cancelled()  # the caller's cancellation comes first
            if (wrapped := unavailable(error, self._transient)) is None:
                raise
            raise wrapped from error
        await checkpoint_if_cancelled()
        raise self._timed_out()

    def _replace(self, dead: Any) -> None:
        assert self._reconnect is not None
        with self._lock:
            if self.fs is dead:  # not replaced by another call meanwhile
                self.fs = self._reconnect.fresh(dead)

    async def short(self, function: Callable[[], T]) -> T:
        """Run short blocking work (a small file's open, read and close) in a worker
        thread that also runs the other short calls queued on this loop meanwhile: one
        hop and one loop wake-up per batch instead of per call. Calls with a timeout take
        a hop of their own (``thread``), which only they can abandon."""
        if self.timeout is not None:
            return await self.thread(function)
        try:
            return await _in_batch(_workers_for(self.fs), function)
        except Exception as error:
            await checkpoint_if_cancelled()
            if (wrapped := unavailable(error, self._transient)) is None:
                raise
            raise wrapped from error

    def _timed_out(self) -> StorageUnavailableError:
        assert self.timeout is not None
        return timed_out(self.timeout)


async def cleanup(step: Awaitable[object], what: str) -> None:
    """Run a clean-up step shielded from cancellation. It runs while another exception
    propagates, so its own failure (the backend is down, say) is logged, not raised."""
    with CancelScope(shield=True):
        try:
            await step
        except Exception as error:
            _LOG.warning(
                "Could not %s (FsspecStorage.cleanup_temp removes leftovers later): %s",
                what,
                error,
                extra={"cleanup": what, "reason": str(error)},  # for the command line's words
            )


def timed_out(timeout: float) -> StorageUnavailableError:
    """The error of a call that got no answer within ``timeout`` seconds."""
    error = StorageUnavailableError(f"no answer within the {timeout:g} s timeout")
    error.__cause__ = TimeoutError(f"timeout={timeout:g} s")
    return error


_pools: weakref.WeakKeyDictionary[AbstractFileSystem, ThreadPoolExecutor]
_pools_lock: threading.Lock
_batches: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Batches]


def _forget_pools() -> None:
    """Start without pools: a child made by fork inherits the parent's pools without
    their threads, and its first call would wait forever for a thread that never starts."""
    global _pools, _pools_lock, _batches
    _pools, _pools_lock = weakref.WeakKeyDictionary(), threading.Lock()
    _batches = weakref.WeakKeyDictionary()


_forget_pools()
os.register_at_fork(after_in_child=_forget_pools)


def _workers_for(fs: AbstractFileSystem) -> ThreadPoolExecutor:
    """The worker threads for blocking calls on ``fs`` without a timeout: a pool per
    filesystem (as many threads as anyio's default), so that calls stuck on one server
    never leave another filesystem waiting for a free thread."""
    pool = _pools.get(fs)
    if pool is None:
        with _pools_lock:
            pool = _pools.get(fs)
            if pool is None:
                pool = _pools[fs] = ThreadPoolExecutor(40, thread_name_prefix="lakery-fsspec")
    return pool


async def _in_worker_thread(pool: ThreadPoolExecutor, function: Callable[[], T]) -> T:
    """Run ``function`` in a thread of ``pool``; cancelling the caller waits for it.

    The same as anyio's ``to_thread.run_sync`` at about two thirds of its cost per call,
    which the many small calls of local files feel.
    """
    future = asyncio.get_running_loop().run_in_executor(
        pool, contextvars.copy_context().run, function
    )
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        # A thread cannot be stopped: what follows a cancellation (clean-up) must not
        # race the work still running in it.
        with CancelScope(shield=True):
            await asyncio.wait([future])
        if not future.cancelled():
            future.exception()  # retrieved: nobody else will
        raise


_Call = tuple[Callable[[], Any], "asyncio.Future[Any]"]
_Outcome = tuple["asyncio.Future[Any]", Any, BaseException | None]


class _Batches:
    """The short blocking calls one loop queued in its current iteration, per pool: each
    pool's are run by one worker thread, one after another, and their outcomes handed
    back in one ``call_soon_threadsafe``. A batch is sent off at the end of the iteration
    that queued its first call, so a stuck call holds only the calls of its batch."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.queued: dict[ThreadPoolExecutor, tuple[list[_Call], asyncio.Future[None]]] = {}

    def add(
        self, pool: ThreadPoolExecutor, function: Callable[[], T]
    ) -> tuple[asyncio.Future[T], asyncio.Future[None]]:
        """The call's outcome, and its batch's end (once every call in it has run)."""
        if not self.queued:
            self.loop.call_soon(self._send)
        if (batch := self.queued.get(pool)) is None:
            batch = self.queued[pool] = ([], self.loop.create_future())
        future: asyncio.Future[T] = self.loop.create_future()
        batch[0].append((partial(contextvars.copy_context().run, function), future))
        return future, batch[1]

    def _send(self) -> None:
        queued, self.queued = self.queued, {}
        for pool, (calls, finished) in queued.items():
            try:
                pool.submit(self._run, calls, finished)
            except RuntimeError as error:  # the pool is shut down (interpreter exit)
                _settle_all([(future, None, error) for _, future in calls], finished)

    def _run(self, calls: list[_Call], finished: asyncio.Future[None]) -> None:
        outcomes: list[_Outcome] = []
        for call, future in calls:
            try:
                outcomes.append((future, call(), None))
            except BaseException as error:  # delivered to the awaiting task
                outcomes.append((future, None, error))
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            self.loop.call_soon_threadsafe(_settle_all, outcomes, finished)


def _settle_all(outcomes: list[_Outcome], finished: asyncio.Future[None]) -> None:
    for future, result, error in outcomes:
        if future.done():  # cancelled: its caller waits for ``finished`` instead
            continue
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)
    if not finished.done():
        finished.set_result(None)


async def _in_batch(pool: ThreadPoolExecutor, function: Callable[[], T]) -> T:
    """Run ``function`` in a batch of short calls (``_Batches``) on a thread of ``pool``;
    cancelling the caller waits for its batch to end, as ``_in_worker_thread`` waits for
    its thread."""
    loop = asyncio.get_running_loop()
    batches = _batches.get(loop)
    if batches is None:
        batches = _batches[loop] = _Batches(loop)
    future, finished = batches.add(pool, function)
    try:
        return await future
    except asyncio.CancelledError:
        if not finished.done():
            with CancelScope(shield=True):
                await asyncio.wait([finished])
        raise


async def in_daemon_thread(function: Callable[[], T]) -> T:
    """Run ``function`` in a new daemon thread and await its outcome.

    A thread abandoned at a timeout may stay blocked for as long as its client retries
    (minutes against an endpoint that does not answer); being a daemon, it never keeps
    the process from exiting, which a pooled worker thread would.
    """
    loop = asyncio.get_running_loop()
    outcome: asyncio.Future[T] = loop.create_future()
    context = contextvars.copy_context()

    def settle(result: T | None, error: BaseException | None) -> None:
        if outcome.done():  # abandoned: nobody awaits it any more
            return
        if error is not None:
            outcome.set_exception(error)
        else:
            outcome.set_result(result)  # type: ignore[arg-type]

    def work() -> None:
        try:
            result, error = context.run(function), None
        except BaseException as raised:  # delivered to the awaiting task
            result, error = None, raised
        with contextlib.suppress(RuntimeError):  # the caller's loop is closed
            loop.call_soon_threadsafe(settle, result, error)

    threading.Thread(target=work, name="lakery-fsspec-blocking", daemon=True).start()
    return await outcome
