"""The storage contract (README: FsspecStorage, Guarantees), unchanged on every backend."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp
import pytest
from conftest import BackendInfo
from helpers import CHUNK, Stream, StreamBroke, chunked, digest_of, payload, read, write
from labox.common.exceptions import NoStorageData

from lakery_fsspec import DEFAULT_TEMPLATE, FsspecStorage, PathTemplate, ReadOnlyStorageError

SIZES = [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 5]
HOW = ["blob", "stream"]


def make(backend: BackendInfo, url: str, **kwargs: object) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def storage(backend: BackendInfo, root_url: str) -> FsspecStorage:
    return make(backend, root_url)


def objects(backend: BackendInfo, url: str) -> list[str]:
    """Every object under a root URL, as paths relative to it (not gc's markers, which a
    write that finds its content stored leaves)."""
    fs = backend.fs()
    root = fs._strip_protocol(url).rstrip("/")
    found = (path[len(root) + 1 :] for path in fs.find(root))
    return sorted(path for path in found if not path.startswith(".lakery-fresh/"))


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("write_how", HOW)
@pytest.mark.parametrize("read_how", HOW)
async def test_round_trip(
    storage: FsspecStorage,
    backend: BackendInfo,
    root_url: str,
    size: int,
    write_how: str,
    read_how: str,
) -> None:
    data = payload(size, seed=size)
    pointer = await write(storage, data, write_how)
    assert await read(storage, pointer, read_how) == data
    assert objects(backend, root_url) == [pointer["path"]]


async def test_multi_block_stream(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    # Larger than two of the clouds' minimum upload blocks (5 or 8 MiB): several parts.
    data = payload(17 * 2**20 + 3)
    pointer = await write(storage, data, "stream")
    assert await read(storage, pointer, "stream") == data
    assert objects(backend, root_url) == [pointer["path"]]


async def test_stream_of_exactly_two_upload_blocks(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    # The last full block ends the upload: no empty final piece, nothing lost.
    block = storage._backends_for(backend.protocol)[1].block_size(storage.chunk_size)
    data = payload(2 * block, seed=2)
    pointer = await write(storage, data, "stream")
    assert await read(storage, pointer, "blob") == data
    assert objects(backend, root_url) == [pointer["path"]]


async def test_pointer_records_protocol_root_and_routed_path(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    data = b'{"a": 1}'
    digest = digest_of(data, "application/json")
    pointer = await storage.write_data(data, digest, {})
    assert pointer["protocol"] == backend.protocol
    assert pointer["root"] == backend.fs()._strip_protocol(root_url).rstrip("/")
    assert pointer["path"] == PathTemplate(DEFAULT_TEMPLATE)(digest, {})
    assert pointer["path"].endswith(".json")
    assert backend.fs().cat_file(f"{pointer['root']}/{pointer['path']}") == data
    text = storage.serialize_config(pointer)
    assert storage.deserialize_config(text) == pointer
    assert set(json.loads(text)) >= {"protocol", "root", "path"}


@pytest.mark.parametrize("how", HOW)
async def test_reconfigured_storage_reads_from_recorded_root(
    backend: BackendInfo, how: str
) -> None:
    old, new = make(backend, backend.new_url()), make(backend, backend.new_url())
    data = payload(CHUNK * 2)
    pointer = await write(old, data, how)
    assert await read(new, pointer, how) == data


async def test_every_url_spelling_reads_every_other(backend: BackendInfo) -> None:
    data = payload(100)
    for scheme in backend.schemes:
        pointer = await write(make(backend, backend.new_url(scheme)), data, "blob")
        assert pointer["protocol"] == backend.protocol
        for other in backend.schemes:
            assert await make(backend, backend.new_url(other)).read_data(pointer) == data


async def test_foreign_protocol_is_refused_unless_in_read_options_or_found_under_our_root(
    storage: FsspecStorage, backend: BackendInfo, tmp_path: object
) -> None:
    foreign_url = "file://" + str(tmp_path) if backend.protocol != "file" else "memory://foreign"
    foreign = FsspecStorage(foreign_url)
    pointer = await foreign.write_data(b"x", digest_of(b"x"), {})
    # Its object is not under this storage's root: refused, and nothing foreign is read.
    with pytest.raises(ValueError, match="read_options"):
        await storage.read_data(pointer)
    with pytest.raises(ValueError, match="read_options"):
        [_ async for _ in storage.read_data_stream(pointer)]
    allowed = make(backend, backend.new_url(), read_options={pointer["protocol"]: {}})
    assert await allowed.read_data(pointer) == b"x"
    # The same relative path under this storage's root, hashing to the pointer's: read.
    await storage.write_data(b"x", digest_of(b"x"), {})
    assert await storage.read_data(pointer) == b"x"
    assert [_ async for _ in storage.read_data_stream(pointer)] == [b"x"]


@pytest.mark.parametrize("how", HOW)
async def test_missing_object_raises_no_storage_data(storage: FsspecStorage, how: str) -> None:
    pointer = await write(storage, b"here", "blob")
    pointer = {**pointer, "path": "ab/not-there.bin"}
    with pytest.raises(NoStorageData, match="not-there"):
        await read(storage, pointer, how)


@pytest.mark.parametrize("how", HOW)
async def test_existing_object_is_not_rewritten(
    storage: FsspecStorage, backend: BackendInfo, root_url: str, how: str
) -> None:
    data = payload(1000)
    first = await write(storage, data, how)
    # Replace the object behind the storage's back: a rewrite would restore it. Same
    # size: one of another size is damage, and replaced (test_healing.py).
    sentinel = b"sentinel".ljust(len(data), b".")
    backend.fs().pipe_file(f"{first['root']}/{first['path']}", sentinel)
    second = await write(storage, data, how)
    assert second == first
    assert await storage.read_data(second) == sentinel
    assert objects(backend, root_url) == [first["path"]]


async def test_stream_that_raises_leaves_nothing(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    stream = Stream(chunked(payload(CHUNK * 4), CHUNK), fail_after=3)
    with pytest.raises(StreamBroke):
        await storage.write_data_stream(stream, stream.get_digest, {})
    assert objects(backend, root_url) == []


async def test_get_digest_that_raises_leaves_nothing(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    stream = Stream([b"abc"])

    def broken_digest(*, allow_incomplete: bool = False):
        if allow_incomplete:
            return stream.get_digest(allow_incomplete=True)
        raise KeyError("digest broke")

    with pytest.raises(KeyError, match="digest broke"):
        await storage.write_data_stream(stream, broken_digest, {})
    assert objects(backend, root_url) == []


async def test_cancelled_stream_leaves_nothing(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    started = asyncio.Event()

    async def endless():
        while True:
            yield payload(CHUNK)
            started.set()
            await asyncio.sleep(0.01)

    stream = Stream([])
    task = asyncio.create_task(storage.write_data_stream(endless(), stream.get_digest, {}))
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert objects(backend, root_url) == []


async def test_temp_objects_are_gone_after_success(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    pointers = [await write(storage, payload(CHUNK + i, seed=i), "stream") for i in range(3)]
    assert objects(backend, root_url) == sorted(p["path"] for p in pointers)


@pytest.mark.parametrize("size", [0, 1, CHUNK])
async def test_a_stream_that_ends_within_its_first_chunk_is_written_as_a_blob(
    storage: FsspecStorage,
    backend: BackendInfo,
    root_url: str,
    monkeypatch: pytest.MonkeyPatch,
    size: int,
) -> None:
    """Its bytes are in memory and its digest known: one create-only write at its place,
    no temp object and no move; one byte more and it is streamed to a temp object."""
    target = storage._backends_for(storage.location.protocol).target
    calls: list[str] = []

    def spying(name: str) -> Any:
        real = getattr(target, name)

        async def spy(*args: Any) -> Any:
            calls.append(name)
            return await real(*args)

        return spy

    for name in ("create", "upload", "move"):
        monkeypatch.setattr(target, name, spying(name))
    data = payload(size, seed=size)
    pointer = await write(storage, data, "stream")
    assert calls == ["create"]
    assert objects(backend, root_url) == [pointer["path"]]
    assert await read(storage, pointer, "stream") == data
    assert await write(storage, data, "stream") == pointer  # already stored
    assert calls == ["create", "create"]
    calls.clear()
    longer = await write(storage, payload(CHUNK + 1, seed=size), "stream")
    assert calls == ["upload", "move"]
    assert objects(backend, root_url) == sorted([pointer["path"], longer["path"]])


@pytest.mark.backends("s3")
async def test_a_small_stream_costs_s3_one_request(
    storage: FsspecStorage, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One create-only PUT (If-None-Match), where a temp object cost six requests: PUT,
    HEAD, multipart create, part copy, complete, DELETE."""
    await write(storage, b"warm-up", "stream")  # the client and its connection made
    sent: list[tuple[str, str]] = []
    original = aiohttp.ClientSession._request

    async def recording(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        sent.append((method, (kwargs.get("headers") or {}).get("If-None-Match", "")))
        return await original(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    pointer = await write(storage, payload(1000), "stream")
    assert sent == [("PUT", "*")]
    assert await storage.list_temp() == []
    assert await read(storage, pointer, "blob") == payload(1000)


@pytest.mark.backends("azure")
async def test_an_azure_blob_is_read_in_ranges_of_at_least_8_mib(
    storage: FsspecStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past the SDK's first 32 MiB, ranges of 8 MiB (the stream reads' size), where the
    SDK would ask for 4 MiB ones (more requests, and Azurite hashes each)."""
    data = payload(40 * 2**20 + 3)
    pointer = await write(storage, data, "blob")
    ranges: list[str] = []
    original = aiohttp.ClientSession._request

    async def recording(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
        if method == "GET":
            ranges.append((kwargs.get("headers") or {}).get("x-ms-range", ""))
        return await original(self, method, url, **kwargs)

    monkeypatch.setattr(aiohttp.ClientSession, "_request", recording)
    assert await read(storage, pointer, "blob") == data
    mib = 2**20
    assert ranges == [
        f"bytes=0-{32 * mib - 1}",
        f"bytes={32 * mib}-{40 * mib - 1}",
        f"bytes={40 * mib}-{len(data) - 1}",
    ]


async def test_concurrent_tasks_share_one_storage(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    contents = [payload(3000 + i % 8, seed=i % 8) for i in range(64)]
    pointers = await asyncio.gather(
        *(write(storage, data, HOW[i % 2]) for i, data in enumerate(contents))
    )
    read_back = await asyncio.gather(
        *(read(storage, p, HOW[i % 3 % 2]) for i, p in enumerate(pointers))
    )
    assert read_back == contents
    assert objects(backend, root_url) == sorted({p["path"] for p in pointers})
    assert len({p["path"] for p in pointers}) == 8


def test_one_storage_across_event_loops(storage: FsspecStorage) -> None:
    data = payload(CHUNK + 7)
    blob = asyncio.run(write(storage, data, "blob"))
    stream = asyncio.run(write(storage, data[::-1], "stream"))
    assert asyncio.run(read(storage, blob, "stream")) == data
    assert asyncio.run(read(storage, stream, "blob")) == data[::-1]


async def test_tag_template_makes_sub_folders(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, router="{tags[team]}/{content_hash}{extension}")
    data = b"[1]"
    pointer = await storage.write_data(data, digest_of(data, "application/json"), {"team": "a/b"})
    assert pointer["path"] == f"a/b/{digest_of(data)['content_hash']}.json"
    assert await storage.read_data(pointer) == data


@pytest.mark.parametrize("how", HOW)
async def test_bad_tag_value_writes_nothing(backend: BackendInfo, root_url: str, how: str) -> None:
    storage = make(backend, root_url, router="{tags[team]}/{content_hash}")
    for value in ["..", "a/../b", "", "/abs", "a\\b", "a\x00b", "%2e%2e", "\uff0e\uff0e"]:
        stream = Stream([b"data"])
        with pytest.raises(ValueError, match="'team'"):  # noqa: PT012
            if how == "blob":
                await storage.write_data(b"data", digest_of(b"data"), {"team": value})
            else:
                await storage.write_data_stream(stream, stream.get_digest, {"team": value})
    with pytest.raises(ValueError, match="needs tag"):
        await storage.write_data(b"data", digest_of(b"data"), {})
    assert objects(backend, root_url) == []


async def test_callable_router(backend: BackendInfo, root_url: str) -> None:
    storage = make(
        backend, root_url, router=lambda d, t: f"by-size/{d['content_size']}/{d['content_hash']}"
    )
    pointer = await storage.write_data(b"abc", digest_of(b"abc"), {})
    assert pointer["path"].startswith("by-size/3/")
    bad = make(backend, root_url, router=lambda d, t: "../escape")
    with pytest.raises(ValueError, match=r"'\.\.' segment"):
        await bad.write_data(b"abc", digest_of(b"abc"), {})


async def test_read_only_storage_reads_but_refuses_writes(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    pointer = await write(storage, b"data", "blob")
    read_only = make(backend, root_url, router=None)
    assert await read_only.read_data(pointer) == b"data"
    stream = Stream([b"more"])
    with pytest.raises(ReadOnlyStorageError, match="read-only"):
        await read_only.write_data(b"more", digest_of(b"more"), {})
    with pytest.raises(ReadOnlyStorageError, match="read-only"):
        await read_only.write_data_stream(stream, stream.get_digest, {})


@pytest.mark.parametrize("how", HOW)
async def test_content_encoding_is_not_decoded_on_read(storage: FsspecStorage, how: str) -> None:
    import gzip

    raw = gzip.compress(b"x" * 12_000)
    pointer = await write(storage, raw, how, content_type="text/plain", encoding="gzip")
    assert await read(storage, pointer, "blob") == raw
    assert await read(storage, pointer, "stream") == raw


class _PausedStream(Stream):
    """A Stream that stops after its first ``before`` chunks until ``resume`` is set."""

    def __init__(self, chunks: list[bytes], before: int) -> None:
        super().__init__(chunks)
        self.before = before
        self.paused = asyncio.Event()
        self.resume = asyncio.Event()

    async def __aiter__(self):  # type: ignore[override]
        index = 0
        async for chunk in super().__aiter__():
            if index == self.before:
                self.paused.set()
                await self.resume.wait()
            index += 1
            yield chunk


async def test_an_object_is_absent_until_its_stream_completes(
    storage: FsspecStorage, backend: BackendInfo, root_url: str
) -> None:
    data = payload(4 * CHUNK + 5, seed=41)
    assert storage.router is not None
    final = storage.router(digest_of(data), {})
    stream = _PausedStream(chunked(data, CHUNK), before=3)
    writing = asyncio.create_task(storage.write_data_stream(stream, stream.get_digest, {}))
    try:
        await asyncio.wait_for(stream.paused.wait(), 60)
        # Three blocks are on their way; only the temp folder may hold anything yet.
        assert [
            path for path in objects(backend, root_url) if not path.startswith(".lakery-tmp/")
        ] == []
    finally:
        stream.resume.set()
    pointer = await asyncio.wait_for(writing, 60)
    assert pointer["path"] == final
    assert objects(backend, root_url) == [final]
    assert await read(storage, pointer, "blob") == data
