"""Where calls run: blocking ones in worker threads, async ones on per-loop filesystem
copies (one per loop, opened once, closed with the loop)."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from fsspec.implementations.memory import MemoryFileSystem
from helpers import CHUNK, payload, read, write

from lakery_fsspec import FsspecStorage
from lakery_fsspec._bridge import Bridge
from lakery_fsspec._loops import LoopInstances, shared_loop_instances


@pytest.mark.parametrize("how", ["blob", "stream"])
async def test_local_files_are_never_opened_or_stated_on_the_event_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str
) -> None:
    """open() and stat() can wait for the disk (NFS, FUSE): only worker threads call them."""
    storage = FsspecStorage(tmp_path, chunk_size=CHUNK)
    loop_thread = threading.get_ident()
    on_loop: list[str] = []
    for name in ("open", "stat", "fstat"):
        real = getattr(os, name)

        def watched(*args: Any, _real: Any = real, _name: str = name, **kwargs: Any) -> Any:
            if threading.get_ident() == loop_thread:
                on_loop.append(_name)
            return _real(*args, **kwargs)

        monkeypatch.setattr(os, name, watched)
    real_open = open

    def watched_open(*args: Any, **kwargs: Any) -> Any:
        if threading.get_ident() == loop_thread:
            on_loop.append("builtins.open")
        return real_open(*args, **kwargs)

    monkeypatch.setattr("builtins.open", watched_open)
    for size in (10, 64 * 2**10, 3 * CHUNK + 1):
        data = payload(size, seed=size)
        assert await read(storage, await write(storage, data, how), how) == data
    assert on_loop == []


@pytest.mark.parametrize("how", ["thread", "short"])
async def test_cancelling_a_blocking_call_waits_for_its_thread(how: str) -> None:
    bridge = Bridge(MemoryFileSystem())
    started, finished = threading.Event(), threading.Event()

    def blocking() -> None:
        started.set()
        time.sleep(0.3)
        finished.set()

    task = asyncio.ensure_future(getattr(bridge, how)(blocking))
    await asyncio.to_thread(started.wait)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert finished.is_set()  # the cancellation came back only after the thread's work


@pytest.mark.parametrize("how", ["thread", "short"])
async def test_blocking_calls_keep_the_callers_context_and_errors(how: str) -> None:
    bridge = Bridge(MemoryFileSystem())
    variable: contextvars.ContextVar[str] = contextvars.ContextVar("variable")
    variable.set("caller's")
    assert await getattr(bridge, how)(variable.get) == "caller's"
    with pytest.raises(KeyError, match="raised in the thread"):
        await getattr(bridge, how)(lambda: {}["raised in the thread"])


async def test_short_calls_queued_together_share_one_worker_thread_hop() -> None:
    """Each call gets its own outcome; calls queued in one loop iteration run in one hop,
    off the loop; one that raises fails only its caller."""
    bridge = Bridge(MemoryFileSystem())
    loop_thread = threading.get_ident()

    def work(number: int) -> tuple[int, int]:
        if number == 3:
            raise ValueError("three")
        return number, threading.get_ident()

    outcomes = await asyncio.gather(
        *(bridge.short(lambda n=n: work(n)) for n in range(8)), return_exceptions=True
    )
    assert isinstance(outcomes[3], ValueError)
    answers = [outcome for outcome in outcomes if isinstance(outcome, tuple)]
    assert [number for number, _ in answers] == [0, 1, 2, 4, 5, 6, 7]
    threads = {thread for _, thread in answers}
    assert len(threads) == 1
    assert loop_thread not in threads


class Hooks:
    """connect/close hooks that record which copies they saw, and on which loop."""

    def __init__(self, fail_connects: int = 0) -> None:
        self.connected: list[tuple[Any, asyncio.AbstractEventLoop]] = []
        self.closed: list[tuple[Any, asyncio.AbstractEventLoop]] = []
        self.fail_connects = fail_connects

    async def connect(self, fs: Any) -> None:
        await asyncio.sleep(0.01)  # let concurrent callers pile up behind the first
        if self.fail_connects:
            self.fail_connects -= 1
            raise ConnectionError("refused")
        self.connected.append((fs, asyncio.get_running_loop()))

    async def close(self, fs: Any) -> None:
        self.closed.append((fs, asyncio.get_running_loop()))


def instances(hooks: Hooks) -> LoopInstances:
    return LoopInstances(MemoryFileSystem(), hooks.connect, hooks.close)


def test_one_copy_per_loop_opened_once_and_closed_with_its_loop() -> None:
    hooks = Hooks()
    copies = instances(hooks)

    async def main() -> list[Any]:
        return await asyncio.gather(*(copies.get() for _ in range(16)))

    first, second = asyncio.run(main()), asyncio.run(main())
    assert len({id(fs) for fs in first}) == len({id(fs) for fs in second}) == 1
    assert first[0] is not second[0]
    assert first[0].storage_options["asynchronous"]
    assert first[0] is not MemoryFileSystem()
    assert [fs for fs, _ in hooks.connected] == [first[0], second[0]]
    assert hooks.closed == hooks.connected  # each closed on its own loop, at its end
    assert copies._opened == copies._ready == {}


def test_a_failed_connect_is_raised_and_retried_on_the_next_call() -> None:
    hooks = Hooks(fail_connects=1)
    copies = instances(hooks)

    async def main() -> Any:
        with pytest.raises(ConnectionError, match="refused"):
            await copies.get()
        return await copies.get()

    fs = asyncio.run(main())
    assert hooks.connected[0][0] is fs
    assert hooks.closed == hooks.connected


def test_loops_in_threads_get_their_own_copies() -> None:
    hooks = Hooks()
    copies = instances(hooks)
    barrier = threading.Barrier(4)
    seen: list[Any] = []

    async def main() -> None:
        fs = await copies.get()
        barrier.wait()  # every loop holds its copy at the same time
        seen.append(fs)

    threads = [threading.Thread(target=asyncio.run, args=(main(),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(fs) for fs in seen}) == 4
    assert sorted(map(id, (fs for fs, _ in hooks.closed))) == sorted(map(id, seen))


def test_dropping_the_owner_closes_its_copy_while_the_loop_runs() -> None:
    hooks = Hooks()

    async def main() -> None:
        copies = instances(hooks)
        await copies.get()
        del copies
        gc.collect()
        for _ in range(5):
            await asyncio.sleep(0)
        assert len(hooks.closed) == 1  # before the loop ends

    asyncio.run(main())
    assert hooks.closed == hooks.connected


def test_shared_copies_neither_keep_their_filesystem_alive_nor_outlive_it() -> None:
    hooks = Hooks()
    fs = MemoryFileSystem(skip_instance_cache=True)
    copies = shared_loop_instances(fs, hooks.connect, hooks.close)
    assert shared_loop_instances(fs, hooks.connect, hooks.close) is copies
    watch = weakref.ref(copies)
    del fs, copies
    gc.collect()
    assert watch() is None


@pytest.mark.backends("s3", "gcs", "azure")
def test_storages_on_one_filesystem_share_its_copies(backend: BackendInfo, root_url: str) -> None:
    one, two = (
        FsspecStorage(url, storage_options=backend.storage_options)
        for url in (root_url, root_url + "/other")
    )
    copies = [s._backends_for(backend.protocol).target.io._loop_instances for s in (one, two)]
    assert copies[0] is copies[1]
    assert copies[0] is not None

    async def main() -> None:
        data = payload(10)
        assert await read(two, await write(one, data, "blob"), "blob") == data
        assert len(copies[0]._ready) == 1  # one copy, and so one client, for both

    asyncio.run(main())


@pytest.mark.backends("s3", "gcs", "azure")
def test_cloud_calls_run_on_the_callers_loop(backend: BackendInfo, root_url: str) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    copies = storage._backends_for(backend.protocol).target.io._loop_instances
    assert copies is not None
    data = payload(1000)

    async def main() -> dict[str, Any]:
        pointer = await write(storage, data, "blob")
        assert await read(storage, pointer, "stream") == data
        assert list(copies._opened) == [asyncio.get_running_loop()]
        return pointer

    pointer = asyncio.run(main())
    assert copies._opened == {}  # closed with the loop
    assert asyncio.run(read(storage, pointer, "blob")) == data
    assert copies._opened == {}
