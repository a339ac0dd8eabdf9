"""Layered URLs on every backend: caches (``simplecache::``, ``filecache::``) read through,
``dir::`` folders, and chains of both. Writes go to the target, pointers name the real
folder on it, and reads return exactly the stored bytes."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import multiprocessing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, Stream, StreamBroke, chunked, payload, read, write
from processes import read_back_together

from lakery_fsspec import FsspecStorage
from lakery_fsspec._temp import temp_name

CACHES = ("simplecache", "filecache")
DEADLINE = 120.0


@dataclass
class Layered:
    """A layered URL over a fresh root on the backend, and where it really writes."""

    url: str
    storage_options: dict[str, Any]
    real_url: str  # the same folder as a plain URL of the target
    cache: Path | None  # the cache folder, for cache layers

    def storage(self, **kwargs: Any) -> FsspecStorage:
        return FsspecStorage(
            self.url, storage_options=self.storage_options, chunk_size=CHUNK, **kwargs
        )


def _cache(kind: str) -> Callable[[BackendInfo, str, Path], Layered]:
    def build(backend: BackendInfo, root_url: str, tmp: Path) -> Layered:
        options = {**backend.storage_options, kind: {"cache_storage": str(tmp / "cache")}}
        return Layered(f"{kind}::{root_url}", options, root_url, tmp / "cache")

    return build


def _dir_chained(backend: BackendInfo, root_url: str, tmp: Path) -> Layered:
    return Layered(
        f"dir://sub/folder::{root_url}", backend.storage_options, f"{root_url}/sub/folder", None
    )


def _dir_bare(backend: BackendInfo, root_url: str, tmp: Path) -> Layered:
    return Layered(f"dir::{root_url}", backend.storage_options, root_url, None)


def _dir_options(backend: BackendInfo, root_url: str, tmp: Path) -> Layered:
    # fsspec.filesystem("dir", path=..., target_protocol=..., target_options=...), as a URL.
    options = {
        "path": root_url,
        "target_protocol": backend.schemes[0],
        "target_options": backend.storage_options,
    }
    return Layered("dir://sub", options, f"{root_url}/sub", None)


def _cache_over_dir(backend: BackendInfo, root_url: str, tmp: Path) -> Layered:
    options = {**backend.storage_options, "simplecache": {"cache_storage": str(tmp / "cache")}}
    url = f"simplecache::dir://sub::{root_url}"
    return Layered(url, options, f"{root_url}/sub", tmp / "cache")


LAYERS: dict[str, Callable[[BackendInfo, str, Path], Layered]] = {
    "simplecache": _cache("simplecache"),
    "filecache": _cache("filecache"),
    "dir-chained": _dir_chained,
    "dir-bare": _dir_bare,
    "dir-options": _dir_options,
    "simplecache-over-dir": _cache_over_dir,
}


@pytest.fixture(params=list(LAYERS))
def layered(
    request: pytest.FixtureRequest, backend: BackendInfo, root_url: str, tmp_path: Path
) -> Layered:
    return LAYERS[request.param](backend, root_url, tmp_path)


@pytest.fixture(params=CACHES)
def cached(
    request: pytest.FixtureRequest, backend: BackendInfo, root_url: str, tmp_path: Path
) -> Layered:
    return _cache(request.param)(backend, root_url, tmp_path)


def real_root(backend: BackendInfo, url: str) -> str:
    return str(backend.fs()._strip_protocol(url)).rstrip("/")


def cached_files(layered: Layered) -> list[Path]:
    assert layered.cache is not None
    if not layered.cache.exists():
        return []
    skip = ("cache", ".lakery-fsspec-fill.lock")
    return [path for path in layered.cache.rglob("*") if path.is_file() and path.name not in skip]


@pytest.mark.parametrize("how", ["blob", "stream"])
async def test_writes_land_in_the_real_folder_and_read_back(
    backend: BackendInfo, layered: Layered, how: str
) -> None:
    storage = layered.storage()
    data = payload(5 * CHUNK + 11, seed=3)  # a stream read of six ranges, one read ahead
    pointer = await write(storage, data, how)
    assert pointer["protocol"] == backend.protocol
    assert pointer["root"] == real_root(backend, layered.real_url)
    assert backend.fs().cat_file(f"{pointer['root']}/{pointer['path']}") == data
    assert await read(storage, pointer, "stream") == data
    assert await read(storage, pointer, "blob") == data
    # A storage on the plain URL of the same folder reads the pointer as its own.
    plain = FsspecStorage(layered.real_url, storage_options=backend.storage_options)
    assert await plain.read_data(pointer) == data


@pytest.mark.backends("s3", "gcs", "azure")
@pytest.mark.parametrize("how", ["blob", "stream"])
async def test_content_type_reaches_the_target(
    backend: BackendInfo, layered: Layered, how: str
) -> None:
    pointer = await write(layered.storage(), b'{"a": 1}', how, content_type="application/json")
    where = f"{backend.schemes[0]}://{pointer['root']}/{pointer['path']}"
    assert backend.metadata(where)["content_type"] == "application/json"


async def test_a_failed_stream_leaves_nothing_and_cleanup_sees_the_target(
    backend: BackendInfo, layered: Layered
) -> None:
    storage = layered.storage()
    stream = Stream(chunked(payload(3 * CHUNK), CHUNK), fail_after=2)
    with pytest.raises(StreamBroke):
        await storage.write_data_stream(stream, stream.get_digest, {})
    fs = backend.fs()
    root = real_root(backend, layered.real_url)
    assert not [path for path in fs.find(root) if fs.isfile(path)]
    # A crash's leftover on the target is what the layered storage's clean-up removes.
    leftover = f"{root}/.lakery-tmp/{temp_name()}"
    backend.overwrite(leftover, b"left by a crash")
    assert [path for path, _ in await storage.list_temp()] == [leftover]
    assert await storage.cleanup_temp(older_than=0) == [leftover]
    assert not fs.exists(leftover)


async def test_writes_skip_the_cache_and_reads_fill_it(
    backend: BackendInfo, cached: Layered
) -> None:
    storage = cached.storage()
    data = payload(3 * CHUNK + 1, seed=5)
    pointer = await write(storage, data, "stream")
    await write(storage, b"a blob", "blob")
    assert cached_files(cached) == []  # written to the target only
    assert await read(storage, pointer, "stream") == data
    assert len(cached_files(cached)) == 1


async def test_a_second_read_is_served_from_the_cache_and_verify_reads_the_target(
    backend: BackendInfo, cached: Layered
) -> None:
    storage = cached.storage()
    data = payload(2 * CHUNK + 9, seed=6)
    pointer = await write(storage, data, "blob")
    assert await read(storage, pointer, "blob") == data  # now in the cache
    where = f"{pointer['root']}/{pointer['path']}"
    backend.overwrite(where, data[::-1])  # changed on the target behind the cache's back
    assert await read(storage, pointer, "blob") == data
    assert await read(storage, pointer, "stream") == data
    result = await storage.verify([pointer])
    assert [(problem.kind, problem.url) for problem in result.problems] == [
        ("corrupt", f"{pointer['protocol']}://{where}")
    ]


async def test_concurrent_reads_through_a_cold_cache_return_every_byte(
    backend: BackendInfo, cached: Layered
) -> None:
    # The first read of an object fills its cache file in place; a read that found the
    # file half-filled used to return it short, without an error (12 of 20 MiB).
    data = payload(4 * 2**20 + 5, seed=7)
    pointer = await write(cached.storage(), data, "stream")
    storage = cached.storage(verify_reads=False)
    reads = [read(storage, pointer, how) for how in ("stream", "blob") * 4]
    results = await asyncio.gather(*reads)
    assert [len(result) for result in results] == [len(data)] * len(reads)
    assert all(result == data for result in results)


@pytest.mark.backends("local", "s3")  # (the cache layer is the same over any target)
def test_processes_sharing_a_cold_cache_folder_read_every_byte(
    backend: BackendInfo, cached: Layered
) -> None:
    # Four processes read one object at the same moment through one cache folder: one
    # fills the cache file, the others wait for it (not read it half-filled).
    data = payload(20 * 2**20 + 5, seed=8)
    pointer = asyncio.run(write(cached.storage(), data, "blob"))
    storage = cached.storage(verify_reads=False)
    context = multiprocessing.get_context("spawn")
    gate = context.Manager().Barrier(4)
    with concurrent.futures.ProcessPoolExecutor(4, mp_context=context) as pool:
        reads = [
            pool.submit(read_back_together, gate, storage, pointer, how)
            for how in ("stream", "blob", "stream", "blob")
        ]
        hashes = [read.result(timeout=DEADLINE) for read in reads]
    assert hashes == [hashlib.sha256(data).hexdigest()] * 4
    assert len(cached_files(cached)) == 1


async def test_options_reach_their_layer(
    backend: BackendInfo, cached: Layered, tmp_path: Path
) -> None:
    storage = cached.storage()
    pointer = await write(storage, b"optioned", "blob")
    assert await storage.read_data(pointer) == b"optioned"
    assert cached.cache is not None
    assert cached.cache.is_relative_to(tmp_path)
    assert len(cached_files(cached)) == 1  # the cache_storage option was used


def test_dir_spellings_name_the_same_folder(tmp_path: Path) -> None:
    base = tmp_path.resolve()
    spellings = [
        FsspecStorage(f"dir://a/b::file://{base}"),
        FsspecStorage(f"dir::file://{base}/a/b"),
        FsspecStorage(f"dir::dir://b::dir://a::file://{base}"),
        FsspecStorage("dir://a/b", storage_options={"path": str(base), "target_protocol": "file"}),
        FsspecStorage("dir://b", storage_options={"path": f"file://{base}/a"}),
        FsspecStorage(f"simplecache::dir://a/b::file://{base}"),
    ]
    assert {(s.location.protocol, s.location.root) for s in spellings} == {("file", f"{base}/a/b")}


async def test_dir_takes_the_options_every_filesystem_takes(tmp_path: Path) -> None:
    base = tmp_path.resolve()  # noqa: ASYNC240 - the test's own folder, before any I/O
    universal = {"skip_instance_cache": True, "use_listings_cache": False}
    storages = [
        FsspecStorage("dir://a", storage_options={"path": str(base), **universal}),
        FsspecStorage(f"dir://a::file://{base}", storage_options={"dir": universal}),
    ]
    for storage in storages:
        assert (storage.location.protocol, storage.location.root) == ("file", f"{base}/a")
        pointer = await write(storage, b"universal", "blob")
        assert await storage.read_data(pointer) == b"universal"


@pytest.mark.parametrize(
    ("url", "options", "message"),
    [
        ("dir://sub", {}, "needs the folder it wraps"),
        ("dir://sub", {"path": "/x", "fs": object()}, "filesystem instance"),
        ("dir://sub", {"path": "/x", "colour": "red"}, "unknown dir:// options"),
        ("dir://../up::file:///tmp/x", {}, "must be a relative path"),
        ("dir://sub::file:///tmp/x", {"dir": {"path": "/y"}}, "not in storage_options"),
    ],
)
def test_a_dir_url_without_a_clear_folder_is_refused(
    url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        FsspecStorage(url, storage_options=options)
