"""Where SRC and DST are one service, ``copy`` has the store copy each object (S3 copies,
a reflink or in-kernel copy locally) after hashing it at the source; ``--link`` hard-links
on one local filesystem; ``--stream`` (and two services, S3 -> GCS) streams."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, digest_of, payload, write

from lakery_fsspec import FsspecStorage, copy_lake
from lakery_fsspec._backends.base import Backend
from lakery_fsspec.cli import main

DATA = [payload(CHUNK + 10, 41), payload(3 * CHUNK + 1, 42)]
"""Larger than a chunk: smaller objects stream (one request each way) even on one service."""


def make(backend: BackendInfo, url: str | Path, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


def _no_client_writes(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the bytes went through this process")

    for name in ("upload", "create"):
        monkeypatch.setattr(Backend, name, refused)
    from lakery_fsspec._backends.s3 import S3Backend

    put = S3Backend.put

    async def put_empty(self: S3Backend, path: str, data: bytes, *args: Any, **kwargs: Any) -> None:
        assert data == b"", "the bytes went through this process"  # an empty object is put
        await put(self, path, data, *args, **kwargs)

    monkeypatch.setattr(S3Backend, "put", put_empty)


async def _lake(storage: FsspecStorage) -> list[Any]:
    return [await write(storage, data, "stream") for data in DATA]


@pytest.mark.backends("s3", "gcs", "azure", "local")
async def test_one_service_copies_server_side_and_still_checks_hashes(
    backend: BackendInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    src, dst = make(backend, backend.new_url()), make(backend, backend.new_url())
    pointers = await _lake(src)
    fs = backend.fs()
    bad = payload(2 * CHUNK, 43)
    rotten = await write(src, bad, "stream")
    fs.pipe_file(f"{src.location.root}/{rotten['path']}", b"!" + bad[1:])
    _no_client_writes(monkeypatch)
    if backend.name == "local":
        from lakery_fsspec._backends.local import LocalBackend

        monkeypatch.setattr(LocalBackend, "create", lambda *a: pytest.fail("streamed"))  # pyright: ignore[reportUnknownLambdaType]
    result = await copy_lake(src, dst)
    assert (result.copied, [p.kind for p in result.problems]) == (2, ["corrupt"])
    for pointer, data in zip(pointers, DATA, strict=True):
        assert fs.cat_file(f"{dst.location.root}/{pointer['path']}") == data
    assert not fs.exists(f"{dst.location.root}/{rotten['path']}")
    again = await copy_lake(src, dst)
    assert (again.copied, again.present) == (0, 2)


@pytest.mark.backends("s3")
async def test_stream_streams_on_one_service(backend: BackendInfo) -> None:
    src, dst = make(backend, backend.new_url()), make(backend, backend.new_url())
    await _lake(src)
    result = await copy_lake(src, dst, server_side=False)
    assert (result.copied, result.ok) == (2, True)


@pytest.mark.backends("local")
def test_link_hard_links_and_the_default_does_not(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import asyncio

    src = FsspecStorage(tmp_path / "lake", chunk_size=CHUNK)
    pointers = asyncio.run(_lake(src))
    assert main(["copy", str(tmp_path / "lake"), str(tmp_path / "linked"), "--link"]) == 0
    assert main(["copy", str(tmp_path / "lake"), str(tmp_path / "copied")]) == 0
    assert "2 copied" in capsys.readouterr().err
    for pointer in pointers:
        original = tmp_path / "lake" / pointer["path"]
        linked, copied = (
            tmp_path / "linked" / pointer["path"],
            tmp_path / "copied" / pointer["path"],
        )
        assert linked.stat().st_ino == original.stat().st_ino
        assert copied.stat().st_ino != original.stat().st_ino
        assert copied.read_bytes() == original.read_bytes()
    assert not list((tmp_path / "copied" / ".lakery-tmp").glob("*"))


@pytest.mark.backends("gcs")
async def test_s3_to_gcs_streams(backend: BackendInfo, s3_server: Any) -> None:
    """Two services: every object streams through this process, hashed on the way."""
    s3_server.start()
    src = FsspecStorage(
        f"s3://{s3_server.bucket}/{hashlib.sha1(b'gcs').hexdigest()}-{id(backend)}",
        storage_options=s3_server.storage_options,
        chunk_size=CHUNK,
    )
    pointers = await _lake(src)
    dst = make(backend, backend.new_url())
    result = await copy_lake(src, dst)
    assert (result.copied, result.ok) == (2, True)
    moved = {f"s3://{src.location.root}": f"{dst.location.protocol}://{dst.location.root}"}
    reader = make(backend, backend.new_url(), relocated=moved, router=None)
    for pointer, data in zip(pointers, DATA, strict=True):
        assert await reader.read_data(pointer) == data


async def _labox_lake(storage: FsspecStorage, database: Path) -> tuple[Any, list[Any]]:
    """Values and a stream saved through labox into ``storage``: (engine, manifests)."""
    from labox.builtin import StorableValue
    from labox.core import BaseRecord, Registry, save_one
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    await BaseRecord.create_all(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    writer = Registry(modules=["labox.builtin"], default_storage=storage)
    async with sessions() as session:
        saved = [
            await save_one(StorableValue(value), registry=writer, session=session)
            for value in VALUES
        ]
    return engine, saved


async def _load_fresh(engine: Any, saved: list[Any], storage: FsspecStorage) -> list[Any]:
    from labox.builtin import StorableValue
    from labox.core import ManifestRecord, Registry, load_one
    from sqlalchemy.ext.asyncio import async_sessionmaker

    sessions = async_sessionmaker(engine, expire_on_commit=False)
    reader = Registry(modules=["labox.builtin"], default_storage=storage)
    async with sessions() as session:
        fresh = [await session.get_one(ManifestRecord, s.id) for s in saved]
        return [
            (await load_one(f, StorableValue, registry=reader, session=session)).value
            for f in fresh
        ]


VALUES = [{"n": n, "pad": "y" * (n * 40_000)} for n in range(4)]
"""Up to 120 kB each: with CHUNK-sized chunks, both small and server-side objects."""


@pytest.mark.backends("s3", "gcs")
async def test_a_lake_moved_within_one_service_or_to_another_loads_through_labox(
    backend: BackendInfo, s3_server: Any, tmp_path: Path
) -> None:
    """S3 -> S3 in one service (server-side), S3 -> GCS (streamed): labox's records are
    rewritten to the copy, the source is emptied, and every record loads from the copy."""
    s3_server.start()
    src = FsspecStorage(
        f"s3://{s3_server.bucket}/{tmp_path.name}-src",
        storage_options=s3_server.storage_options,
        chunk_size=CHUNK,
    )
    engine, saved = await _labox_lake(src, tmp_path / "labox.db")
    try:
        dst = make(backend, backend.new_url())
        result = await copy_lake(src, dst, database=engine, rewrite=True)
        assert (result.copied, result.rewritten, result.ok) == (4, 4, True)
        import s3fs

        s3 = s3fs.S3FileSystem(skip_instance_cache=True, **s3_server.storage_options)
        s3.rm(src.location.root, recursive=True)
        assert not s3.find(src.location.root)
        elsewhere = make(backend, backend.new_url(), router=None)
        assert await _load_fresh(engine, saved, elsewhere) == VALUES
    finally:
        await engine.dispose()


@pytest.mark.backends("s3", "local", "memory")
async def test_upload_new_writes_once_and_leaves_nothing_on_a_refusal(
    backend: BackendInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stream step of copy: a new key is written (on S3 straight to it, no temp); an
    existing one is refused and kept; a stream that raises leaves nothing, no upload."""
    storage = make(backend, backend.new_url())
    target, root = await storage._target("test")  # pyright: ignore[reportPrivateUsage]
    data = payload(3 * CHUNK + 7, 44)
    final = f"{root}/aa/new.bin"

    async def stream(fail: bool = False) -> Any:
        for start in range(0, len(data), CHUNK):
            yield data[start : start + CHUNK]
        if fail:
            raise RuntimeError("hash mismatch")

    digest = digest_of(data)
    if backend.name == "s3":  # straight to the key: no temp object, no move

        async def no_move(*args: Any) -> bool:
            raise AssertionError("moved")

        monkeypatch.setattr(type(target), "move", no_move)
    temp = storage._temp_path()  # pyright: ignore[reportPrivateUsage]
    assert await target.upload_new(final, stream(), digest, CHUNK, temp) is True
    temp = storage._temp_path()  # pyright: ignore[reportPrivateUsage]
    assert await target.upload_new(final, stream(), digest, CHUNK, temp) is False
    fs = backend.fs()
    assert fs.cat_file(final) == data
    with pytest.raises(RuntimeError, match="hash mismatch"):
        await target.upload_new(f"{root}/bb/bad.bin", stream(True), digest, CHUNK, temp)
    assert not fs.exists(f"{root}/bb/bad.bin")
    assert [p for p in fs.find(root) if ".lakery-tmp" in p] == []
    if backend.lists_uploads:
        assert backend.open_uploads(root) == []
