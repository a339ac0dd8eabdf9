"""What only object stores can show: metadata, server-side moves, metadata-preserving moves."""

from __future__ import annotations

import gzip
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload

from lakery_fsspec import FsspecStorage

pytestmark = pytest.mark.backends("s3", "gcs", "azure")

_READS = ("_cat_file", "_cat_ranges", "_cat", "_get_file", "open_async", "cat_file", "get_file")


@pytest.fixture
def storage(backend: BackendInfo, root_url: str) -> FsspecStorage:
    return FsspecStorage(root_url, storage_options=backend.storage_options, chunk_size=2**20)


@pytest.mark.parametrize("how", ["blob", "stream"])
async def test_content_type_and_encoding_are_object_metadata(
    storage: FsspecStorage, backend: BackendInfo, how: str
) -> None:
    data = gzip.compress(b'{"a": 1}' * 1000)
    if how == "blob":
        pointer = await storage.write_data(data, digest_of(data, "application/json", "gzip"), {})
    else:
        stream = Stream(chunked(data, 1000), "application/json", "gzip")
        pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    metadata = backend.metadata(f"{pointer['root']}/{pointer['path']}".split("/", 1)[1])
    assert metadata == {"content_type": "application/json", "content_encoding": "gzip"}
    assert await storage.read_data(pointer) == data


async def test_stream_moves_server_side_without_reading_back(
    storage: FsspecStorage, backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Patched on the class: calls run on per-event-loop copies of the filesystem too.
    fs_class = type(storage.location.filesystems()[1])

    def no_reads(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError(f"the client read object bytes during a move: {args}")

    for name in _READS:
        monkeypatch.setattr(fs_class, name, no_reads, raising=False)
    original_open = fs_class.open

    def open_for_writing_only(self: Any, path: str, mode: str = "rb", **kwargs: Any) -> Any:
        assert "r" not in mode, f"opened {path} for reading during a write"
        return original_open(self, path, mode, **kwargs)

    monkeypatch.setattr(fs_class, "open", open_for_writing_only)
    moves: list[tuple[str, str]] = []
    backend_ops = storage._backends_for(backend.protocol).target
    original_move = backend_ops.move

    async def recording_move(source: str, destination: str, digest: Any) -> bool:
        moves.append((source, destination))
        return await original_move(source, destination, digest)

    monkeypatch.setattr(backend_ops, "move", recording_move)

    data = payload(3 * 2**20 + 17)
    stream = Stream(chunked(data, 2**18), "application/octet-stream")
    pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    monkeypatch.undo()

    root = pointer["root"]
    [(source, destination)] = moves
    assert source.startswith(f"{root}/.lakery-tmp/")
    assert destination == f"{root}/{pointer['path']}"
    assert await storage.read_data(pointer) == data
    assert backend.fs().find(f"{root}/.lakery-tmp") == []


async def test_foreign_read_returns_stored_bytes_too(
    storage: FsspecStorage, backend: BackendInfo
) -> None:
    # A storage of another protocol reading these pointers through read_options must get
    # the same raw (never decoded) bytes as the pointers' own storage.
    data = gzip.compress(b"x" * 12_000)
    pointer = await storage.write_data(data, digest_of(data, "text/plain", "gzip"), {})
    reader = FsspecStorage(
        "memory://foreign-reader", read_options={backend.protocol: backend.storage_options}
    )
    assert await reader.read_data(pointer) == data
    assert b"".join([chunk async for chunk in reader.read_data_stream(pointer)]) == data
