"""Across processes: a storage pickles as its configuration and works in children made
by fork, forkserver and spawn (README: "Many processes and clusters")."""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import hashlib
import logging
import multiprocessing
import pickle
from collections.abc import Callable
from typing import Any

import cloudpickle  # pyright: ignore[reportMissingTypeStubs]
import pytest
from conftest import BackendInfo
from helpers import CHUNK, payload, read, write
from labox.common.exceptions import NoStorageData
from processes import both, broken_stream, by_tag, read_back, report

from lakery_fsspec import FsspecStorage

DEADLINE = 120.0
"""Seconds a child may take: a hang fails the test instead of stalling the run."""

COPIERS: dict[str, Callable[[FsspecStorage], FsspecStorage]] = {
    "pickle": lambda storage: pickle.loads(pickle.dumps(storage)),
    "cloudpickle": lambda storage: pickle.loads(cloudpickle.dumps(storage)),
    "deepcopy": copy.deepcopy,
}
METHODS = ["fork", "forkserver", "spawn"]


def make(backend: BackendInfo, url: str, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


@pytest.mark.parametrize("used", [False, True], ids=["unused", "used"])
@pytest.mark.parametrize("copier", list(COPIERS))
async def test_a_copy_writes_the_same_pointers_and_reads_the_originals(
    backend: BackendInfo, root_url: str, copier: str, used: bool
) -> None:
    original = make(backend, root_url, timeout=30.0, verify_reads=True, temp_prefix="tmp/x")
    data = payload(3 * CHUNK + 5, seed=1)
    if used:
        await write(original, data, "stream")
    clone = COPIERS[copier](original)
    assert clone is not original
    assert repr(clone) == repr(original)
    for name in ("chunk_size", "temp_prefix", "verify_reads", "timeout", "router"):
        assert getattr(clone, name) == getattr(original, name), name
    for how in ("blob", "stream"):
        mine = await write(clone, payload(CHUNK + 1, seed=2), how)
        theirs = await write(original, payload(CHUNK + 1, seed=2), how)
        assert mine == theirs
        assert await read(clone, await write(original, data, how), how) == data
        assert await read(original, mine, how) == payload(CHUNK + 1, seed=2)


async def test_a_copy_made_on_another_thread_and_loop_works_here(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    pointer = await write(storage, b"made here", "blob")

    async def elsewhere() -> bytes:
        await write(storage, b"used there", "blob")  # a loop and copies of its own
        return pickle.dumps(storage)

    blob = await asyncio.to_thread(asyncio.run, elsewhere())
    assert await read(pickle.loads(blob), pointer, "blob") == b"made here"


def test_a_callable_router_pickles_as_itself(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, router=by_tag)
    assert pickle.loads(pickle.dumps(storage)).router is by_tag
    lambda_router = make(backend, root_url, router=lambda digest, tags: digest["content_hash"])
    clone = pickle.loads(cloudpickle.dumps(lambda_router))
    digest = {"content_hash": "ab" * 32}
    assert clone.router(digest, {}) == "ab" * 32  # type: ignore[arg-type]


def test_read_options_and_read_only_survive_pickling(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, router=None, read_options={"memory": {}})
    clone = pickle.loads(pickle.dumps(storage))
    assert clone.router is None
    assert repr(clone) == repr(storage)
    assert clone._read_options == storage._read_options


@pytest.mark.parametrize("method", METHODS)
def test_children_by_process_pool_and_executor(
    backend: BackendInfo, root_url: str, method: str
) -> None:
    """A storage made and used in the parent, handed to children three ways."""
    storage = make(backend, root_url)
    parent_data = payload(3 * CHUNK + 5, seed=10)
    pointers = [asyncio.run(write(storage, parent_data, how)) for how in ("blob", "stream")]
    context = multiprocessing.get_context(method)

    results = [in_process(context, both, storage, 100)]  # fork: inherited, not pickled

    with context.Pool(2) as pool:
        results.append(pool.apply_async(both, (storage, 200)).get(timeout=DEADLINE))
        if backend.name != "memory":  # a child's memory store is its own
            hows = ("blob", "stream")
            reads = [
                pool.apply_async(read_back, (storage, p, h))
                for p, h in zip(pointers, hows, strict=True)
            ]
            expected = hashlib.sha256(parent_data).hexdigest()
            assert [result.get(timeout=DEADLINE) for result in reads] == [expected] * 2

    with concurrent.futures.ProcessPoolExecutor(2, mp_context=context) as executor:
        results.append(executor.submit(both, storage, 300).result(timeout=DEADLINE))

    for result in results:
        assert isinstance(result, list), result  # a child's error arrives as its repr
        assert [intact for _, intact in result] == [True, True]
        if backend.name != "memory":
            for pointer, _ in result:
                data = asyncio.run(read(storage, pointer, "blob"))
                assert hashlib.sha256(data).hexdigest() == pointer["content_hash"]
    assert _temps(backend, storage) == []


def in_process(context: Any, work: Callable[..., Any], *args: Any) -> Any:
    """``work(*args)`` in a ``context.Process`` child (with fork, ``args`` are inherited,
    not pickled), within the deadline."""
    queue = context.Queue()
    process = context.Process(target=report, args=(queue, work, *args))
    process.start()
    try:
        return queue.get(timeout=DEADLINE)
    finally:
        process.join(DEADLINE)
        if process.is_alive():
            process.kill()


def _temps(backend: BackendInfo, storage: FsspecStorage) -> list[str]:
    folder = f"{storage.location.root}/{storage.temp_prefix}"
    fs = backend.fs() if backend.name != "memory" else storage.location.filesystems()[1]
    fs.invalidate_cache()
    return fs.find(folder) if fs.exists(folder) else []


def test_a_used_storage_and_a_new_one_work_in_a_forked_child_many_times(
    backend: BackendInfo, root_url: str
) -> None:
    """The hang the issue saw (an inherited thread pool without threads) was intermittent:
    fork several times, after use, each child writing through the inherited storage."""
    storage = make(backend, root_url)
    asyncio.run(write(storage, payload(3 * CHUNK, seed=5), "stream"))
    context = multiprocessing.get_context("fork")
    for round_ in range(4):
        result = in_process(context, both, storage, 500 + 2 * round_)
        assert isinstance(result, list), result
        assert all(intact for _, intact in result)
        asyncio.run(write(storage, payload(CHUNK, seed=600 + round_), "blob"))  # parent goes on


@pytest.mark.parametrize("method", METHODS)
def test_a_failed_stream_in_a_child_cleans_up_after_itself(
    backend: BackendInfo, root_url: str, method: str
) -> None:
    storage = make(backend, root_url)
    asyncio.run(write(storage, payload(3 * CHUNK, seed=8), "stream"))  # used before the fork
    raised = in_process(multiprocessing.get_context(method), broken_stream, storage)
    assert raised == "StreamBroke"  # the stream's own error, not "not fork-safe"
    if backend.name != "memory":
        assert _temps(backend, storage) == []


@pytest.mark.backends("memory")
async def test_memory_in_another_process_warns_once(
    backend: BackendInfo, root_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    storage = make(backend, root_url)
    pointer = await write(storage, b"only here", "blob")
    with caplog.at_level(logging.WARNING, logger="lakery_fsspec"):
        assert await read(storage, pointer, "blob") == b"only here"
        assert not caplog.records  # the process that made it
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(1, mp_context=context) as executor:
            child = executor.submit(_child_reads, storage, pointer).result(timeout=DEADLINE)
    assert child == ("NoStorageData", 1)


def _child_reads(storage: FsspecStorage, pointer: Any) -> tuple[str, int]:
    """In a spawned child: try to read, then count the warnings logged (two storages)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("lakery_fsspec").addHandler(handler)
    outcome = "read"
    try:
        asyncio.run(read(storage, pointer, "blob"))
    except NoStorageData:
        outcome = "NoStorageData"
    asyncio.run(write(pickle.loads(pickle.dumps(storage)), b"x", "blob"))
    warnings = [
        r for r in records if r.levelno == logging.WARNING and "per process" in r.getMessage()
    ]
    return outcome, len(warnings)
