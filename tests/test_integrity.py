"""Integrity: pointers record hash, algorithm and size; verify_reads catches corruption."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator

import pytest
from conftest import BackendInfo
from helpers import CHUNK, Stream, chunked, digest_of, payload, read, write

from lakery_fsspec import FsspecStorage, IntegrityError

HOW = ["blob", "stream"]
SIZE = 5 * CHUNK + 123


def make(backend: BackendInfo, url: str, **kwargs: object) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)  # type: ignore[arg-type]


def corrupt(backend: BackendInfo, pointer: dict[str, object], data: bytes) -> None:
    """Replace the object's bytes behind the storage's back."""
    backend.fs().pipe_file(f"{pointer['root']}/{pointer['path']}", data)


@pytest.mark.parametrize("how", HOW)
async def test_pointer_records_hash_algorithm_and_size(
    backend: BackendInfo, root_url: str, how: str
) -> None:
    storage = make(backend, root_url)
    data = payload(SIZE)
    pointer = await write(storage, data, how)
    assert pointer["content_hash"] == hashlib.sha256(data).hexdigest()
    assert pointer["content_hash_algorithm"] == "sha256"
    assert pointer["content_size"] == SIZE
    assert storage.deserialize_config(storage.serialize_config(pointer)) == pointer
    # Older readers see only what they know: the extras change nothing for them.
    legacy = {key: pointer[key] for key in ("protocol", "root", "path")}
    assert await make(backend, root_url, verify_reads=True).read_data(legacy) == data  # type: ignore[arg-type]


@pytest.mark.parametrize("write_how", HOW)
@pytest.mark.parametrize("read_how", HOW)
async def test_intact_objects_pass_verification(
    backend: BackendInfo, root_url: str, write_how: str, read_how: str
) -> None:
    storage = make(backend, root_url, verify_reads=True)
    for size in (0, 1, SIZE):
        data = payload(size, seed=size)
        pointer = await write(storage, data, write_how)
        assert await read(storage, pointer, read_how) == data


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("flip", r"is corrupt: sha256 [0-9a-f]{64} != [0-9a-f]{64}"),
        ("truncate", r"is corrupt: \d+ bytes where \d+ were recorded"),
        ("extend", r"is corrupt: more than the \d+ bytes recorded"),
    ],
)
@pytest.mark.parametrize("how", HOW)
async def test_corruption_behind_the_storage_is_caught(
    backend: BackendInfo, root_url: str, damage: str, message: str, how: str
) -> None:
    storage = make(backend, root_url)
    data = payload(SIZE)
    pointer = await write(storage, data, "blob")
    damaged = {
        "flip": data[:1000] + bytes([data[1000] ^ 1]) + data[1001:],
        "truncate": data[:-1],
        "extend": data + b"!" * (2 * CHUNK),
    }[damage]
    corrupt(backend, pointer, damaged)
    # Without verification the damage goes unnoticed...
    assert await read(storage, pointer, how) == damaged
    # ...with it, every read raises, naming the object.
    checked = make(backend, root_url, verify_reads=True)
    where = f"{pointer['protocol']}://{pointer['root']}/{pointer['path']}"
    with pytest.raises(IntegrityError, match=message) as caught:
        await read(checked, pointer, how)
    assert where in str(caught.value)


async def test_stream_verification_does_not_buffer(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, verify_reads=True)
    data = payload(SIZE)
    pointer = await write(storage, data, "stream")
    corrupt(backend, pointer, data[::-1])  # same size, other bytes: only the hash can tell
    received: list[bytes] = []
    with pytest.raises(IntegrityError, match="sha256"):
        await collect(storage.read_data_stream(pointer), received)
    # Every chunk was handed over as it arrived; the verdict comes after the last one.
    assert b"".join(received) == data[::-1]
    assert len(received) == -(-SIZE // CHUNK)


async def test_too_long_stream_fails_before_the_end(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, verify_reads=True)
    pointer = await write(storage, payload(CHUNK), "blob")
    corrupt(backend, pointer, payload(10 * CHUNK))
    received: list[bytes] = []
    with pytest.raises(IntegrityError, match="more than"):
        await collect(storage.read_data_stream(pointer), received)
    assert len(received) <= 1


async def test_other_algorithms_are_verified_too(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url, verify_reads=True)
    data = b"md5 content"
    digest = {
        **digest_of(data),
        "content_hash": hashlib.md5(data).hexdigest(),
        "content_hash_algorithm": "md5",
    }
    pointer = await storage.write_data(data, digest, {})  # type: ignore[arg-type]
    assert await storage.read_data(pointer) == data
    corrupt(backend, pointer, b"MD5 content")
    with pytest.raises(IntegrityError, match="md5"):
        await storage.read_data(pointer)


async def test_unverifiable_algorithms_still_check_the_size(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url, verify_reads=True)
    pointer = await write(storage, b"abc", "blob")
    for algorithm in ("no-such-hash", "shake_128"):
        odd = {**pointer, "content_hash_algorithm": algorithm}
        assert await storage.read_data(odd) == b"abc"
        corrupt(backend, pointer, b"ab")
        with pytest.raises(IntegrityError, match="2 bytes where 3"):
            await storage.read_data(odd)
        corrupt(backend, pointer, b"abc")


def test_extras_of_the_wrong_type_are_refused() -> None:
    storage = FsspecStorage("memory://integrity")
    base = {"protocol": "memory", "root": "/x", "path": "ab/cd"}
    for extra in ({"content_size": "3"}, {"content_size": -1}, {"content_hash": 1}):
        with pytest.raises(ValueError, match="Invalid FsspecStorage data"):
            storage.deserialize_config(json.dumps({**base, **extra}))
    nulls = {"content_size": None, "content_hash": None, "content_hash_algorithm": None}
    assert storage.deserialize_config(json.dumps({**base, **nulls}))["path"] == "ab/cd"


async def test_streamed_write_records_what_was_streamed(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url, verify_reads=True)
    data = payload(3 * CHUNK)
    stream = Stream(chunked(data, 1000))
    pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    assert pointer["content_size"] == len(data)
    assert pointer["content_hash"] == hashlib.sha256(data).hexdigest()


async def collect(chunks: AsyncIterator[bytes], into: list[bytes]) -> None:
    """Append each chunk to ``into`` as it arrives."""
    async for chunk in chunks:
        into.append(chunk)
