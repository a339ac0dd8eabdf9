"""A sync task that runs each operation with ``asyncio.run``: a new event loop per call.

That is the usual shape of a Dask, Ray or Celery task and of scripts: the storage is made
once, and each 1 KiB write + read runs in its own ``asyncio.run``. It is measured beside
the same work on one long-lived loop, and beside raw fsspec in the same pattern. Raw
fsspec there is what a user of its async API has to write: an async filesystem's HTTP
session belongs to the loop it was opened on, so each ``asyncio.run`` makes a fresh
``asynchronous=True, skip_instance_cache=True`` filesystem, opens its session, and
closes it before the loop ends. (fsspec's sync API called inside ``asyncio.run`` would
block the loop for every call: not a way to write async code.)

The leak check runs FsspecStorage through many new loops and compares this process's
RSS, open file descriptors and open sockets before and after.
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import fsspec
from labox.core.storage import Digest

from benchmarks.contenders.raw_fsspec import close_async_fs
from benchmarks.envs import Env
from benchmarks.rss import measure_in_subprocess
from benchmarks.workload import small_objects
from lakery_fsspec import FsspecStorage

__all__ = [
    "BACKENDS",
    "FAMILIES",
    "leak_check",
    "measure_leaks",
    "new_loop_seconds",
    "one_loop_seconds",
    "pattern",
]

BACKENDS = ("s3", "gcs", "azure")
FAMILIES = ("fsspec_storage", "raw_fsspec")
_WARM_UP_LOOPS = 20  # clients, imports and caches made before the leak check's baseline

Objects = list[tuple[bytes, Digest]]


class Pattern(Protocol):
    """How one contender does a 1 KiB write + read from inside some event loop."""

    async def open(self) -> Any:
        """What ``write_read`` needs on the running loop."""
        ...

    async def close(self, handle: Any) -> None:
        """Release what ``open`` made, before its loop ends."""
        ...

    async def write_read(self, handle: Any, data: bytes, digest: Digest) -> None:
        """Write ``data``, read it back and check it."""
        ...


class _Storage:
    """FsspecStorage, made once outside any loop, as a task would receive it."""

    def __init__(self, env: Env, prefix: str) -> None:
        self.storage = FsspecStorage(env.url(prefix), storage_options=env.storage_options)

    async def open(self) -> FsspecStorage:
        return self.storage

    async def close(self, handle: Any) -> None:
        return None  # the storage closes its per-loop clients with each loop

    async def write_read(self, handle: FsspecStorage, data: bytes, digest: Digest) -> None:
        pointer = await handle.write_data(data, digest, {})
        _check(await handle.read_data(pointer), data)


class _RawFsspec:
    """Raw fsspec's async API: a fresh filesystem and session per loop."""

    def __init__(self, env: Env, prefix: str) -> None:
        self.env = env
        self.root = f"{env.root}/{prefix}"

    async def open(self) -> Any:
        fs = fsspec.filesystem(
            self.env.protocol,
            asynchronous=True,
            skip_instance_cache=True,
            **self.env.storage_options,
        )
        set_session = getattr(fs, "set_session", None)  # s3fs, gcsfs; adlfs connects in __init__
        if set_session is not None:
            await set_session()
        return fs

    async def close(self, handle: Any) -> None:
        await close_async_fs(handle)

    async def write_read(self, handle: Any, data: bytes, digest: Digest) -> None:
        path = f"{self.root}/{digest['content_hash']}"
        await handle._pipe_file(path, data)
        _check(await handle._cat_file(path), data)


def pattern(family: str, env: Env, prefix: str) -> Pattern:
    """The new-loop pattern of one contender family, writing under ``prefix``."""
    if family == "fsspec_storage":
        return _Storage(env, prefix)
    if family == "raw_fsspec":
        return _RawFsspec(env, prefix)
    raise ValueError(f"no new-loop pattern for {family!r}; choose from {FAMILIES}")


def _check(read: bytes, data: bytes) -> None:
    if read != data:
        raise AssertionError(f"read {len(read)} bytes that differ from the {len(data)} written")


async def _one(contender: Pattern, data: bytes, digest: Digest) -> None:
    handle = await contender.open()
    try:
        await contender.write_read(handle, data, digest)
    finally:
        await contender.close(handle)


def _run(work: Awaitable[None], timeout: float) -> None:
    async def bounded() -> None:
        await asyncio.wait_for(work, timeout)

    asyncio.run(bounded())


def new_loop_seconds(
    contender: Pattern, objects: Objects, timeout: float, on_start: Callable[[], None]
) -> float:
    """Seconds for every write + read but the first (a warm-up), each in its own
    ``asyncio.run``; ``on_start()`` is called as the clock starts."""
    (data, digest), *timed = objects
    _run(_one(contender, data, digest), timeout)
    on_start()
    started = time.perf_counter()
    for data, digest in timed:
        _run(_one(contender, data, digest), timeout)
    return time.perf_counter() - started


def one_loop_seconds(
    contender: Pattern, objects: Objects, timeout: float, on_start: Callable[[], None]
) -> float:
    """Seconds for the same work one after the other on one loop (the first write +
    read, a warm-up, untimed); ``on_start()`` is called as the clock starts."""
    (data, digest), *timed = objects
    seconds: list[float] = []

    async def work() -> None:
        handle = await contender.open()
        try:
            await contender.write_read(handle, data, digest)
            on_start()
            started = time.perf_counter()
            for item in timed:
                await contender.write_read(handle, *item)
            seconds.append(time.perf_counter() - started)
        finally:
            await contender.close(handle)

    _run(work(), timeout)
    return seconds[0]


def leak_check(env: Env, prefix: str, loops: int, timeout: float) -> dict[str, float]:
    """RSS (MiB), open fds and open sockets gained over ``loops`` new loops of
    FsspecStorage (a fresh 1 KiB write + read in each), after a warm-up.

    Run it in a fresh process (``measure_leaks``): what other contenders leave behind
    would otherwise be counted, or close during the count.
    """
    contender = _Storage(env, prefix)
    objects = small_objects(_WARM_UP_LOOPS + loops, 1024, seed=4000)
    for data, digest in objects[:_WARM_UP_LOOPS]:
        _run(_one(contender, data, digest), timeout)
    gc.collect()
    before = _usage()
    for data, digest in objects[_WARM_UP_LOOPS:]:
        _run(_one(contender, data, digest), timeout)
    gc.collect()
    after = _usage()
    return {key: after[key] - before[key] for key in before}


def measure_leaks(env: Env, prefix: str, loops: int, timeout: float) -> dict[str, float]:
    """``leak_check`` in a fresh interpreter."""
    job = {"env": env.to_json(), "prefix": prefix, "loops": loops, "timeout": timeout}
    return measure_in_subprocess(job, timeout * 2, module="benchmarks.newloop")


def _usage() -> dict[str, float]:
    """This process's RSS (MiB), open file descriptors and open sockets."""
    with open("/proc/self/status") as status:
        rss_kib = next(int(line.split()[1]) for line in status if line.startswith("VmRSS:"))
    fds = sockets = 0
    for name in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{name}")
        except OSError:  # the directory listing's own fd, closed since
            continue
        fds += 1
        sockets += target.startswith("socket:")
    return {"rss": rss_kib / 1024, "fds": fds, "sockets": sockets}


if __name__ == "__main__":
    job = json.loads(sys.argv[1])
    growth = leak_check(Env.from_json(job["env"]), job["prefix"], job["loops"], job["timeout"])
    print(json.dumps(growth), flush=True)
