"""Another implementation of a protocol: obstore's fsspec adapter registered for ``s3`` or
``az`` in place of s3fs or adlfs. The storage picks its backend by the filesystem's
class, so S3's and Azure's backends (which call s3fs and adlfs internals) step aside and
the generic one drives the adapter; pointers still name the protocol, not the client.

(gs is left out: obstore writes to GCS with its XML API, which fake-gcs-server answers
with 400 invalid uploadType.)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import fsspec
import pytest
from conftest import BackendInfo
from fsspec.registry import _registry, known_implementations  # pyright: ignore[reportPrivateUsage]
from helpers import CHUNK, Stream, StreamBroke, chunked, digest_of, payload, read, write
from labox.common.exceptions import NoStorageData
from obstore.fsspec import FsspecStore, register
from servers import AWS_KEY, AWS_REGION, AWS_SECRET, AZURITE_ACCOUNT, AZURITE_KEY

from lakery_fsspec import Backend, FsspecStorage
from lakery_fsspec._backends import _REGISTRY as _BACKENDS  # pyright: ignore[reportPrivateUsage]
from lakery_fsspec._backends.obstore import ObstoreBackend
from lakery_fsspec._temp import temp_name

pytestmark = pytest.mark.backends("s3", "azure")

SCHEME = {"s3": "s3", "seaweedfs": "s3", "azure": "az"}
SIZES = [0, 1, CHUNK, 3 * CHUNK + 5]


def obstore_options(backend: BackendInfo) -> dict[str, Any]:
    """What points obstore's store at the backend's emulator."""
    if backend.is_s3:
        config = {
            "endpoint": backend.endpoint,
            "access_key_id": AWS_KEY,
            "secret_access_key": AWS_SECRET,
            "region": AWS_REGION,
            "virtual_hosted_style_request": False,
        }
    else:
        config = {
            "account_name": AZURITE_ACCOUNT,
            "account_key": AZURITE_KEY,
            "endpoint": f"{backend.endpoint}/{AZURITE_ACCOUNT}",
        }
    return {"config": config, "client_options": {"allow_http": True}}


@contextlib.contextmanager
def obstore_registered(scheme: str) -> Iterator[None]:
    """obstore's adapter is fsspec's implementation of ``scheme`` inside the block; fsspec's
    own (s3fs, adlfs) is restored afterwards."""
    previous = _registry.get(scheme)
    register(scheme)
    try:
        yield
    finally:
        if previous is not None:
            fsspec.register_implementation(scheme, previous, clobber=True)
        else:
            _registry.pop(scheme, None)
        assert scheme in known_implementations
        assert not issubclass(fsspec.get_filesystem_class(scheme), FsspecStore)


@pytest.fixture(params=["obstore-backend", "generic-backend"])
def obstore(
    request: pytest.FixtureRequest, backend: BackendInfo, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """obstore's adapter serves the backend's scheme during the test, driven by its own
    backend or (as any other implementation would be) by the generic one. Yields the scheme."""
    if request.param == "generic-backend":
        monkeypatch.setitem(_BACKENDS, "*", [])  # no backend for the adapter's class
    backend.fs()  # the assertions' filesystem is the usual client, made before the swap
    scheme = SCHEME[backend.name]
    with obstore_registered(scheme):
        yield scheme


def make(backend: BackendInfo, scheme: str, **kwargs: Any) -> FsspecStorage:
    url = backend.new_url().replace(f"{backend.schemes[0]}://", f"{scheme}://", 1)
    return FsspecStorage(url, storage_options=obstore_options(backend), chunk_size=CHUNK, **kwargs)


def objects(backend: BackendInfo, storage: FsspecStorage) -> list[str]:
    """Every object under the storage's root, relative to it, listed with fsspec's usual client."""
    fs = backend.fs()
    root = storage.location.root
    fs.invalidate_cache()
    found = (path[len(root) + 1 :] for path in fs.find(root))
    return sorted(path for path in found if not path.startswith(".lakery-fresh/"))


async def test_the_protocols_backend_steps_aside_and_pointers_name_the_protocol(
    backend: BackendInfo, obstore: str, request: pytest.FixtureRequest
) -> None:
    storage = make(backend, obstore)
    target = storage._backends_for(storage.location.protocol).target  # pyright: ignore[reportPrivateUsage]
    assert isinstance(target.fs, FsspecStore)
    generic = "generic-backend" in request.node.callspec.id
    assert type(target) is (Backend if generic else ObstoreBackend)
    pointer = await write(storage, b"through obstore", "blob")
    assert pointer["protocol"] == backend.protocol  # "s3", "abfs": never the client's name
    assert pointer["root"] == storage.location.root
    assert pointer["root"].startswith(f"{backend.root}/")


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("write_how", ["blob", "stream"])
@pytest.mark.parametrize("read_how", ["blob", "stream"])
async def test_round_trip(
    backend: BackendInfo, obstore: str, size: int, write_how: str, read_how: str
) -> None:
    storage = make(backend, obstore)
    data = payload(size, seed=size)
    pointer = await write(storage, data, write_how)
    assert await read(storage, pointer, read_how) == data
    assert objects(backend, storage) == [pointer["path"]]


async def test_pointers_cross_between_implementations(backend: BackendInfo) -> None:
    backend.fs()
    scheme = SCHEME[backend.name]
    with obstore_registered(scheme):
        through_obstore = make(backend, scheme)
        data = payload(2 * CHUNK, seed=1)
        pointer = await write(through_obstore, data, "stream")  # its filesystem is made now
    # The same root through fsspec's usual client (s3fs, adlfs).
    usual = FsspecStorage(
        f"{backend.schemes[0]}://{through_obstore.location.root}",
        storage_options=backend.storage_options,
    )
    assert await usual.read_data(pointer) == data
    theirs = await usual.write_data(b"by the usual client", digest_of(b"by the usual client"), {})
    assert await through_obstore.read_data(theirs) == b"by the usual client"
    assert not isinstance(usual._backends_for(backend.protocol).target.fs, FsspecStore)  # pyright: ignore[reportPrivateUsage]
    assert isinstance(through_obstore._backends_for(backend.protocol).target.fs, FsspecStore)  # pyright: ignore[reportPrivateUsage]


async def test_identical_content_is_stored_once(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    data = payload(2 * CHUNK + 3, seed=2)
    first = await write(storage, data, "blob")
    again = await write(storage, data, "stream")
    concurrent = await asyncio.gather(*(write(storage, data, "stream") for _ in range(8)))
    assert all(pointer == first for pointer in [again, *concurrent])
    assert objects(backend, storage) == [first["path"]]


async def test_64_concurrent_tasks(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    datas = [payload(1000 + index, seed=index) for index in range(64)]
    pointers = await asyncio.gather(
        *(
            write(storage, data, "stream" if index % 2 else "blob")
            for index, data in enumerate(datas)
        )
    )
    results = await asyncio.gather(
        *(
            read(storage, pointer, "stream" if index % 3 else "blob")
            for index, pointer in enumerate(pointers)
        )
    )
    assert results == datas
    assert len(objects(backend, storage)) == 64


async def test_a_failed_stream_leaves_nothing(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    stream = Stream(chunked(payload(3 * CHUNK), CHUNK), fail_after=2)
    with pytest.raises(StreamBroke):
        await storage.write_data_stream(stream, stream.get_digest, {})
    assert objects(backend, storage) == []


async def test_a_failed_multipart_stream_leaves_no_unfinished_upload(backend: BackendInfo) -> None:
    # obstore's backend only: the generic one cannot abort a file whose discard() does
    # nothing, and leaves the unfinished upload (a multipart upload on S3).
    backend.fs()
    with obstore_registered(SCHEME[backend.name]):
        storage = make(backend, SCHEME[backend.name])
        # obstore's writer uploads parts of 10 MiB: the stream fails after the first one.
        stream = Stream([payload(2**20, seed=index) for index in range(14)], fail_after=12)
        with pytest.raises(StreamBroke):
            await storage.write_data_stream(stream, stream.get_digest, {})
    assert objects(backend, storage) == []
    assert backend.open_uploads(storage.location.root) == []


async def test_cleanup_removes_only_crash_leftovers(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    kept = await write(storage, b"final", "blob")
    leftover = f"{storage.location.root}/.lakery-tmp/{temp_name()}"
    backend.overwrite(leftover, b"left by a crash")
    assert [path for path, _ in await storage.list_temp()] == [leftover]
    assert await storage.cleanup_temp(older_than=0) == [leftover]
    assert objects(backend, storage) == [kept["path"]]


async def test_a_missing_object_is_no_storage_data(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    pointer = await write(storage, b"soon gone", "blob")
    backend.fs().rm_file(f"{pointer['root']}/{pointer['path']}")
    with pytest.raises(NoStorageData):
        await storage.read_data(pointer)
    with pytest.raises(NoStorageData):
        await read(storage, pointer, "stream")


async def test_verify_rehashes_through_it(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    pointer = await write(storage, payload(CHUNK + 1), "stream")
    assert (await storage.verify([pointer])).problems == []
    backend.overwrite(f"{pointer['root']}/{pointer['path']}", payload(CHUNK + 1, seed=9))
    assert [problem.kind for problem in (await storage.verify([pointer])).problems] == ["corrupt"]


def test_a_new_event_loop_per_call(backend: BackendInfo, obstore: str) -> None:
    storage = make(backend, obstore)
    pointer = asyncio.run(write(storage, b"one loop", "blob"))
    assert asyncio.run(storage.read_data(pointer)) == b"one loop"
    assert asyncio.run(read(storage, pointer, "stream")) == b"one loop"
