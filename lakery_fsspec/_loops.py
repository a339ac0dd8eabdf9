"""One asynchronous copy of a filesystem per caller event loop, closed with that loop."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import threading
import weakref
from collections.abc import AsyncGenerator, Awaitable, Callable
from functools import partial
from typing import Any

from fsspec.spec import AbstractFileSystem

__all__ = ["LoopInstances", "shared_loop_instances"]

Hook = Callable[[Any], Awaitable[None]]
CopyOptions = Callable[[AbstractFileSystem], dict[str, Any]]


class LoopInstances:
    """``asynchronous=True`` copies of one filesystem, one per running event loop.

    Awaiting a filesystem's coroutines on the caller's own loop saves the two
    cross-thread wake-ups per call that fsspec's IO loop costs. A copy's HTTP session
    belongs to the loop it was opened on, so each loop gets its own copy (built with the
    same options), which is closed when the loop's runner (``asyncio.run``,
    ``asyncio.Runner``, anyio, pytest-asyncio) shuts down its async generators. A loop
    closed without that step leaves its copy open until the process exits.
    """

    def __init__(
        self,
        fs: AbstractFileSystem,
        connect: Hook,
        close: Hook,
        copy_options: CopyOptions | None = None,
    ) -> None:
        options = {
            **fs.storage_options,
            **(copy_options(fs) if copy_options else {}),  # e.g. what the copies share
            "asynchronous": True,
            "skip_instance_cache": True,
            "use_listings_cache": False,  # listings must be fresh, and the copy is private
        }
        # Not fs itself: the copies must not keep it alive (see shared_loop_instances).
        self._make = partial(_awaited_only(type(fs)), *fs.storage_args, **options)
        self._connect = connect
        self._close = close
        self._lock = threading.Lock()  # loops in several threads may share one storage
        self._opened: dict[asyncio.AbstractEventLoop, asyncio.Task[Any]] = {}
        # The open copies, each with the generator that closes it (the loop holds only a
        # weak reference to that generator).
        self._ready: dict[asyncio.AbstractEventLoop, tuple[Any, AsyncGenerator[None]]] = {}

    async def get(self) -> Any:
        """The copy for the running loop, opened on first use."""
        loop = asyncio.get_running_loop()
        if (ready := self._ready.get(loop)) is not None:
            return ready[0]
        with self._lock:
            task = self._opened.get(loop)
            if task is None:
                task = self._opened[loop] = loop.create_task(self._open(loop))
        # Shielded: a caller cancelled while the copy opens must not fail the others.
        return await asyncio.shield(task)

    async def _open(self, loop: asyncio.AbstractEventLoop) -> Any:
        try:
            copy = self._make()
            await self._connect(copy)
            # No strong reference back to self: dropping the storage closes its copies.
            closer = _closer(copy, self._close, partial(_forget, weakref.ref(self), loop))
            await anext(closer)  # now the loop tracks it, and closes it at shutdown
        except BaseException:
            with self._lock:
                del self._opened[loop]  # the next call tries again
            raise
        with self._lock:
            self._ready[loop] = (copy, closer)
        return copy

    def _forget(self, loop: asyncio.AbstractEventLoop) -> None:
        with self._lock:
            self._opened.pop(loop, None)
            self._ready.pop(loop, None)


_shared: weakref.WeakKeyDictionary[AbstractFileSystem, LoopInstances]
_PARENTS: list[object] = []
_shared_lock: threading.Lock


def _forget_all() -> None:
    """Start empty, as a new process does after a fork: the parent's copies belong to
    its loops, and its lock may have been held by a thread the child does not have."""
    global _shared, _shared_lock
    if "_shared" in globals():  # kept: collecting the parent's copies would close them
        _PARENTS.append(_shared)
    _shared, _shared_lock = weakref.WeakKeyDictionary(), threading.Lock()


_forget_all()
os.register_at_fork(after_in_child=_forget_all)


def shared_loop_instances(
    fs: AbstractFileSystem, connect: Hook, close: Hook, copy_options: CopyOptions | None = None
) -> LoopInstances:
    """The per-loop copies of ``fs``, shared by every storage on it.

    fsspec hands every storage configured alike the same cached ``fs``; sharing its
    copies means a new storage on a running loop costs no new client (an S3 client takes
    ~0.1 s to make). They live as long as ``fs`` does, and close with their loops.
    """
    with _shared_lock:
        instances = _shared.get(fs)
        if instances is None:
            instances = _shared[fs] = LoopInstances(fs, connect, close, copy_options)
        return instances


@functools.cache
def _awaited_only(cls: type[AbstractFileSystem]) -> type[AbstractFileSystem]:
    """``cls`` without fsspec's blocking wrappers of its coroutines: making them is most
    of the cost of a new copy, and a copy is only ever awaited."""
    if not getattr(cls, "mirror_sync_methods", False):
        return cls
    attributes = {"mirror_sync_methods": False, "__module__": cls.__module__}
    return type(cls.__name__, (cls,), {**attributes, "__qualname__": cls.__qualname__})


def _forget(owner: weakref.ref[LoopInstances], loop: asyncio.AbstractEventLoop) -> None:
    if (instances := owner()) is not None:
        instances._forget(loop)


async def _closer(copy: Any, close: Hook, forget: Callable[[], None]) -> AsyncGenerator[None]:
    """Closes ``copy`` when its loop shuts down, or when its owner is dropped (then the
    loop finalizes this generator)."""
    try:
        yield
    finally:
        forget()
        with contextlib.suppress(Exception):  # the loop is going away either way
            await close(copy)
