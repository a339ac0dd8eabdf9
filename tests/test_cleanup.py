"""Crash leftovers: cleanup_temp removes stale temp objects and nothing else.

A process killed with SIGKILL cannot clean up after itself: a real child process is killed
mid-stream (local files: the half-written temp file is visible) or between its upload and
its move (object stores: the complete temp object is visible), and cleanup_temp must
remove exactly that leftover, leaving final objects and younger in-flight temps alone.
"""

from __future__ import annotations

import asyncio
import json
import os
import posixpath
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload

from lakery_fsspec import FsspecStorage
from lakery_fsspec.temp import temp_name

CHUNK = 256 * 1024

CHILD = """
import asyncio, hashlib, json, os, sys
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
from lakery_fsspec import FsspecStorage

url, options, mode = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
storage = FsspecStorage(url, storage_options=options, chunk_size=CHUNK_SIZE)
hashed, state = hashlib.sha256(), {"size": 0, "done": False}


async def wait_to_be_killed():
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def stream():
    for index in range(2):
        chunk = bytes([index + 1]) * CHUNK_SIZE
        hashed.update(chunk)
        state["size"] += len(chunk)
        yield chunk
    if mode == "mid-stream":  # both blocks are in the temp object by now
        await wait_to_be_killed()
    state["done"] = True


def get_digest(*, allow_incomplete=False):
    return {
        "content_hash": hashed.hexdigest(), "content_hash_algorithm": "sha256",
        "content_type": "application/octet-stream", "content_encoding": None,
        "content_size": state["size"], "is_complete": state["done"],
    }


async def stuck_move(*args, **kwargs):  # the upload is committed, the move never happens
    await wait_to_be_killed()


if mode == "before-move":
    storage._backends_for(storage.location.protocol)[1].move = stuck_move
asyncio.run(storage.write_data_stream(stream(), get_digest, {}))
""".replace("CHUNK_SIZE", str(CHUNK))


def make(backend: BackendInfo, url: str) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK)


def old_temp_name(seconds_ago: float) -> str:
    return f"{int((time.time() - seconds_ago) * 1000):013d}-{uuid.uuid4().hex}"


def objects(backend: BackendInfo, url: str) -> list[str]:
    fs = backend.fs()
    root = fs._strip_protocol(url).rstrip("/")
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


async def test_cleanup_removes_only_stale_temp_objects(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    root = storage.location.root
    finals = [
        (await storage.write_data(b"final", digest_of(b"final"), {}))["path"],
        (await write_stream(storage, payload(3 * CHUNK)))["path"],
    ]
    stale, young = f".lakery-tmp/{old_temp_name(7200)}", f".lakery-tmp/{temp_name()}"
    untouchable = [
        ".lakery-tmp/notes.txt",  # not a temp name
        f"ab/{old_temp_name(7200)}",  # a temp name outside the temp folder
        f".lakery-tmp/sub/{old_temp_name(7200)}",  # not directly in the temp folder
    ]
    fs = backend.fs()
    for path in [stale, young, *untouchable]:
        fs.pipe_file(f"{root}/{path}", b"leftover")

    assert await storage.cleanup_temp(older_than=timedelta(hours=1)) == [f"{root}/{stale}"]
    assert objects(backend, root_url) == sorted([*finals, young, *untouchable])
    assert await storage.cleanup_temp(older_than=timedelta(hours=1)) == []
    assert await storage.cleanup_temp(older_than=0) == [f"{root}/{young}"]
    assert objects(backend, root_url) == sorted([*finals, *untouchable])
    for path in finals:
        assert await storage.read_data({"protocol": backend.protocol, "root": root, "path": path})


async def test_cleanup_leaves_an_in_flight_stream_alone(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    paused, resume = asyncio.Event(), asyncio.Event()

    async def pause_before_last_chunk(index: int) -> None:
        if index == 3:
            paused.set()
            await resume.wait()

    data = payload(4 * CHUNK)
    stream = PausingStream(chunked(data, CHUNK), pause_before_last_chunk)
    writing = asyncio.create_task(storage.write_data_stream(stream, stream.get_digest, {}))
    await paused.wait()
    in_flight = await storage.list_temp()
    if backend.name in ("memory", "local"):  # object stores show nothing before the commit
        assert len(in_flight) == 1
    assert await storage.cleanup_temp(older_than=60) == []
    resume.set()
    pointer = await writing
    assert await storage.read_data(pointer) == data
    assert objects(backend, root_url) == [pointer["path"]]


class PausingStream(Stream):
    """A Stream that awaits ``hook(index)`` before yielding chunk ``index``."""

    def __init__(self, chunks: list[bytes], hook: Callable[[int], Awaitable[None]]) -> None:
        super().__init__(chunks)
        self._hook = hook

    async def __aiter__(self) -> AsyncIterator[bytes]:
        index = 0
        async for chunk in super().__aiter__():
            await self._hook(index)
            index += 1
            yield chunk


@pytest.mark.backends("local", "s3", "gcs", "azure")
async def test_sigkilled_writer_leaves_a_temp_that_cleanup_removes(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    root = storage.location.root
    final = (await storage.write_data(b"final", digest_of(b"final"), {}))["path"]
    # Local files show the half-written temp; object stores only show a committed one.
    mode = "mid-stream" if backend.name == "local" else "before-move"
    await asyncio.to_thread(kill_when_ready, root_url, backend.storage_options, mode)
    [(leftover, age)] = await storage.list_temp()
    assert posixpath.dirname(leftover) == f"{root}/.lakery-tmp"
    if backend.name == "local":
        # Partial: local blocks are 8 MiB, so the first may not be written yet.
        assert backend.fs().size(leftover) <= 2 * CHUNK
    else:
        assert backend.fs().cat_file(leftover) == bytes([1]) * CHUNK + bytes([2]) * CHUNK

    threshold = 1.0
    await asyncio.sleep(max(0.0, threshold - age + 0.05))
    young = f"{root}/.lakery-tmp/{temp_name()}"  # another writer's upload, just started
    backend.fs().pipe_file(young, b"in flight")
    assert await storage.cleanup_temp(older_than=threshold) == [leftover]
    assert [path for path, _ in await storage.list_temp()] == [young]
    assert objects(backend, root_url) == sorted([final, young[len(root) + 1 :]])


async def write_stream(storage: FsspecStorage, data: bytes) -> dict[str, object]:
    stream = Stream(chunked(data, CHUNK))
    return await storage.write_data_stream(stream, stream.get_digest, {})  # type: ignore[return-value]


def kill_when_ready(url: str, options: dict[str, object], mode: str) -> None:
    """Run CHILD on ``url`` and SIGKILL it once it says it is ready."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, json.dumps(options), mode],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
    )
    try:
        assert child.stdout is not None
        assert child.stderr is not None
        timer = threading.Timer(60, child.kill)  # a child that never gets ready
        timer.start()
        line = child.stdout.readline()
        timer.cancel()
        assert line == b"ready\n", child.stderr.read().decode()[-3000:]
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]
