"""Crash leftovers: cleanup_temp removes stale temps and unfinished uploads, nothing else.

A process killed with SIGKILL cannot clean up after itself. A real child process is killed
mid-stream (local files: a half-written temp file; S3: a multipart upload; Azure: blocks
never committed; GCS: a resumable session, which no API lists) or between its upload and
its move (object stores: the complete temp object). cleanup_temp must remove exactly that
leftover, leaving final objects and younger in-flight uploads alone.

Temps are aged by the server's clock, so these tests wait real seconds for a temp to
grow old instead of forging an old name, and skew the writer's or the cleaner's clock to
show that neither counts.
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

from lakery_fsspec import FsspecStorage, TempPath
from lakery_fsspec._backends import spec_for
from lakery_fsspec._temp import temp_name

CHUNK = 256 * 1024
OLD = 2.0
"""Seconds after which the tests' clean-ups count a temp as stale. Servers stamp whole
seconds, so a temp made just before a clean-up is at most one second old to it."""
DAY = 86_400.0

CHILD = """
import asyncio, hashlib, json, os, sys
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
from lakery_fsspec import FsspecStorage

url, options, mode, size = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
storage = FsspecStorage(url, storage_options=options, chunk_size=CHUNK_SIZE)
hashed, state = hashlib.sha256(), {"size": 0, "done": False}


async def wait_to_be_killed():
    print("ready", flush=True)
    await asyncio.sleep(3600)


async def stream():
    for index in range(size // CHUNK_SIZE):
        chunk = bytes([index % 250 + 1]) * CHUNK_SIZE
        hashed.update(chunk)
        state["size"] += len(chunk)
        yield chunk
    if mode == "mid-stream":  # every block but the last has arrived (one may travel)
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
    storage._backends_for(storage.location.protocol).target.move = stuck_move
asyncio.run(storage.write_data_stream(stream(), get_digest, {}))
""".replace("CHUNK_SIZE", str(CHUNK))


def make(backend: BackendInfo, url: str) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK)


def block_size(backend: BackendInfo) -> int:
    """The upload block of a stream written with chunk_size=CHUNK: a stream of this many
    bytes has sent one block (an S3 part, an Azure block, a local write) once it ends."""
    return spec_for(backend.protocol).backend.block_size(CHUNK)


def stamped_name(seconds_ago: float) -> str:
    """A temp name as a writer whose clock is ``seconds_ago`` behind makes it now."""
    return f"{int((time.time() - seconds_ago) * 1000):013d}-{uuid.uuid4().hex}"


def objects(backend: BackendInfo, url: str) -> list[str]:
    fs = backend.fs()
    root = fs._strip_protocol(url).rstrip("/")
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


def open_uploads(backend: BackendInfo, storage: FsspecStorage) -> list[str]:
    """Unfinished uploads under the storage's temp folder, by the cloud's own API."""
    if not backend.lists_uploads:
        return []
    return backend.open_uploads(f"{storage.location.root}/{storage.temp_prefix}/")


async def wait_until_old(storage: FsspecStorage, path: str, seconds: float = OLD) -> None:
    """Wait until ``list_temp`` ages ``path`` at least ``seconds`` (by the server's clock)."""
    deadline = time.monotonic() + seconds + 10
    while path not in [found for found, _ in await storage.list_temp(seconds)]:
        assert time.monotonic() < deadline, f"{path} never grew {seconds} s old"
        await asyncio.sleep(0.2)


async def test_cleanup_removes_only_stale_temp_objects(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    root = storage.location.root
    finals = [
        (await storage.write_data(b"final", digest_of(b"final"), {}))["path"],
        (await write_stream(storage, payload(3 * CHUNK)))["path"],
    ]
    fs = backend.fs()
    # The writer's clock is a day ahead: its name looks young, the server knows better.
    stale = f".lakery-tmp/{stamped_name(-DAY)}"
    fs.pipe_file(f"{root}/{stale}", b"leftover")
    await wait_until_old(storage, f"{root}/{stale}")
    # The writer's clock is a day behind: its name looks old, but it was just written.
    young = f".lakery-tmp/{stamped_name(DAY)}"
    untouchable = [
        ".lakery-tmp/notes.txt",  # not a temp name
        f"ab/{stamped_name(DAY)}",  # a temp name outside the temp folder
        f".lakery-tmp/sub/{stamped_name(DAY)}",  # not directly in the temp folder
    ]
    for path in [young, *untouchable]:
        fs.pipe_file(f"{root}/{path}", b"leftover")

    assert await storage.cleanup_temp(older_than=OLD) == [f"{root}/{stale}"]
    assert objects(backend, root_url) == sorted([*finals, young, *untouchable])
    assert await storage.cleanup_temp(older_than=OLD) == []
    removed = await storage.cleanup_temp(older_than=0)
    assert removed == [f"{root}/{young}"]
    assert removed[0].kind == "object"
    assert objects(backend, root_url) == sorted([*finals, *untouchable])
    for path in finals:
        assert await storage.read_data({"protocol": backend.protocol, "root": root, "path": path})


async def test_cleanup_leaves_an_in_flight_stream_alone(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    paused, resume = asyncio.Event(), asyncio.Event()
    # Two blocks: a writer's latest block may still be travelling, the one before not.
    data = payload(2 * block_size(backend) + CHUNK)
    last = len(chunked(data, CHUNK)) - 1

    async def pause_before_last_chunk(index: int) -> None:
        if index == last:  # a whole block is uploaded by now
            paused.set()
            await resume.wait()

    stream = PausingStream(chunked(data, CHUNK), pause_before_last_chunk)
    writing = asyncio.create_task(storage.write_data_stream(stream, stream.get_digest, {}))
    try:
        await asyncio.wait_for(paused.wait(), 60)
        in_flight = await storage.list_temp()
        if backend.name == "gcs":  # a resumable session: nothing to list
            assert in_flight == []
        else:
            [(path, _)] = in_flight
            assert path.kind == ("upload" if backend.lists_uploads else "object")
            await wait_until_old(storage, path, 1.0)
        assert await storage.cleanup_temp(older_than=60) == []
        assert await storage.cleanup_temp(older_than=timedelta(days=1)) == []
    finally:
        resume.set()
    pointer = await writing
    assert await storage.read_data(pointer) == data
    assert objects(backend, root_url) == [pointer["path"]]
    assert open_uploads(backend, storage) == []
    assert await storage.list_temp() == []


@pytest.mark.backends("s3", "gcs", "azure", "sshfs", "webdav")
async def test_a_skewed_cleaner_clock_does_not_age_temps(
    backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make(backend, root_url)
    folder = f"{storage.location.root}/.lakery-tmp"
    fresh = [f"{folder}/{temp_name()}"]
    backend.fs().pipe_file(fresh[0], b"in flight")
    if backend.lists_uploads:
        fresh.append(f"{folder}/{temp_name()}")
        backend.start_upload(fresh[1])
    skew_the_storage_clock(monkeypatch, DAY)

    found = await storage.list_temp()
    assert sorted(path for path, _ in found) == sorted(fresh)
    assert all(age < 60 for _, age in found), found
    assert await storage.cleanup_temp(older_than=timedelta(hours=1)) == []
    assert sorted(open_uploads(backend, storage)) == sorted(fresh[1:])
    assert sorted(await storage.cleanup_temp(older_than=0)) == sorted(fresh)
    assert open_uploads(backend, storage) == []
    assert await storage.list_temp() == []


@pytest.mark.backends("local", "s3", "gcs", "azure", "sshfs", "webdav")
async def test_a_writer_killed_mid_stream_leaves_what_cleanup_removes(
    backend: BackendInfo, root_url: str
) -> None:
    await kill_a_writer_and_clean_up(backend, root_url, "mid-stream")


@pytest.mark.backends("s3", "gcs", "azure", "sshfs", "webdav")
async def test_a_writer_killed_before_its_move_leaves_what_cleanup_removes(
    backend: BackendInfo, root_url: str
) -> None:
    await kill_a_writer_and_clean_up(backend, root_url, "before-move")


async def kill_a_writer_and_clean_up(backend: BackendInfo, root_url: str, mode: str) -> None:
    """SIGKILL a writer process (mid-stream, or between its upload and its move), check
    what it left, and clean up while another writer's temp and upload are young."""
    storage = make(backend, root_url)
    root = storage.location.root
    final = (await storage.write_data(b"final", digest_of(b"final"), {}))["path"]
    # Mid-stream: two blocks, since a writer's last block may still be travelling.
    size = 2 * block_size(backend) if mode == "mid-stream" else 2 * CHUNK
    await asyncio.to_thread(kill_when_ready, root_url, backend.storage_options, mode, size)

    leftovers = await storage.list_temp()
    if mode == "mid-stream" and backend.name == "gcs":
        # A resumable session holds the bytes: no API lists it, no object appears, and
        # GCS lets it expire a week after it began.
        assert leftovers == []
        assert await storage.cleanup_temp(older_than=0) == []
        assert objects(backend, root_url) == [final]
        return
    [(leftover, _)] = leftovers
    assert posixpath.dirname(leftover) == f"{root}/.lakery-tmp"
    if mode == "before-move":  # the committed temp object, waiting for its move
        assert leftover.kind == "object"
        assert backend.fs().cat_file(leftover) == bytes([1]) * CHUNK + bytes([2]) * CHUNK
    elif backend.name in ("local", "sshfs"):  # a half-written temp file
        assert leftover.kind == "object"
        assert backend.fs().size(leftover) == size
    elif backend.name == "webdav":  # what the server received of a PUT cut off
        assert leftover.kind == "object"
        assert 0 < backend.fs().size(leftover) <= size
    else:  # an S3 multipart upload, Azure blocks never committed
        assert leftover.kind == "upload"
        assert open_uploads(backend, storage) == [leftover]
        assert objects(backend, root_url) == [final]

    await wait_until_old(storage, leftover)
    # Another writer's temp object and upload, just started.
    young = [f"{root}/.lakery-tmp/{temp_name()}"]
    backend.fs().pipe_file(young[0], b"in flight")
    if backend.lists_uploads:
        young.append(f"{root}/.lakery-tmp/{temp_name()}")
        backend.start_upload(young[1])
    assert await storage.cleanup_temp(older_than=OLD) == [leftover]
    assert sorted(path for path, _ in await storage.list_temp()) == sorted(young)
    assert open_uploads(backend, storage) == young[1:]
    assert objects(backend, root_url) == sorted([final, young[0][len(root) + 1 :]])
    assert await storage.cleanup_temp(older_than=OLD) == []  # a second run: nothing to do

    assert sorted(await storage.cleanup_temp(older_than=0)) == sorted(young)
    assert open_uploads(backend, storage) == []
    assert objects(backend, root_url) == [final]


@pytest.mark.backends("azure")
async def test_dropping_uncommitted_blocks_never_leaves_a_blob(
    backend: BackendInfo, root_url: str
) -> None:
    """Where Delete Blob does not count a blob of uncommitted blocks as one, the backend
    commits an empty block list and deletes that; on a name with nothing behind it (as
    when the writer finished meanwhile) no empty blob may be left."""
    storage = make(backend, root_url)
    writer = storage._backends_for(storage.location.protocol)[1]  # pyright: ignore[reportPrivateUsage]
    gone = f"{storage.location.root}/.lakery-tmp/{temp_name()}"
    await writer.abort_upload(gone, None)
    assert objects(backend, root_url) == []
    assert open_uploads(backend, storage) == []


async def test_list_temp_keeps_its_shape(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    path = f"{storage.location.root}/.lakery-tmp/{temp_name()}"
    backend.fs().pipe_file(path, b"x")
    [(found, age)] = await storage.list_temp()
    assert isinstance(found, str)
    assert isinstance(found, TempPath)
    assert found == path
    assert (found.kind, found.upload_id) == ("object", None)
    assert 0 <= age < 60


@pytest.mark.backends("s3", "gcs", "azure")
async def test_list_temp_on_a_missing_bucket_raises(backend: BackendInfo) -> None:
    url = f"{backend.schemes[0]}://missing-{uuid.uuid4().hex[:12]}/lake"
    storage = FsspecStorage(url, storage_options=backend.storage_options)
    with pytest.raises(FileNotFoundError, match=r"(bucket|container) does not exist"):
        await storage.list_temp()
    with pytest.raises(FileNotFoundError, match=r"(bucket|container) does not exist"):
        await storage.cleanup_temp()


def skew_the_storage_clock(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """Set this process's clock ``seconds`` ahead for lakery_fsspec only: moto serves from
    this process too, and its clock (its Date headers) must stay the server's."""

    class SkewedTime:
        def __getattr__(self, name: str) -> object:
            return getattr(time, name)

        def time(self) -> float:
            return time.time() + seconds

        def time_ns(self) -> int:
            return time.time_ns() + int(seconds * 1e9)

    for name, module in list(sys.modules.items()):
        if name.split(".")[0] == "lakery_fsspec" and getattr(module, "time", None) is time:
            monkeypatch.setattr(module, "time", SkewedTime())


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


async def write_stream(storage: FsspecStorage, data: bytes) -> dict[str, object]:
    stream = Stream(chunked(data, CHUNK))
    return await storage.write_data_stream(stream, stream.get_digest, {})  # type: ignore[return-value]


def kill_when_ready(url: str, options: dict[str, object], mode: str, size: int) -> None:
    """Run CHILD on ``url`` and SIGKILL it once it says it is ready."""
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, json.dumps(options), mode, str(size)],
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
            child.wait(10)
        child.stdout.close()  # type: ignore[union-attr]
        child.stderr.close()  # type: ignore[union-attr]


async def test_list_temp_before_any_stream_finds_nothing(
    backend: BackendInfo, root_url: str
) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    assert await storage.list_temp() == []
