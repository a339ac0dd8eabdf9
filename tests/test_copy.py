"""Copying a lake (README: Moving a lake): ``copy_lake`` and ``lakery-fsspec copy`` put
every object of a lake (or those pointers name) at the same relative path in another
storage, create-only, checked by hash on the way, so that labox's records load from the
copy through ``relocated=`` or the verified look under the storage's own root."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, digest_of, on_a_terminal, payload, write
from labox.builtin import StorableStream, StorableValue
from labox.core import BaseRecord, Registry, load_one, save_one
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from lakery_fsspec import FsspecStorage, copy_lake
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("local", "memory", "s3")

VALUE = {"name": "copied", "n": [1, 2, 3]}


def make(backend: BackendInfo, url: str | Path, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


def dst_options(backend: BackendInfo) -> list[str]:
    args: list[str] = []
    for key, value in backend.storage_options.items():
        args += ["--dst-option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


async def _rows():
    for i in range(300):
        yield {"i": i}


async def _saved_lake(root: Path, database: Path) -> tuple[Any, Any, Any]:
    """A local lake with a value and a stream saved through labox: (engine, records)."""
    engine = create_async_engine(f"sqlite+aiosqlite:///{database}")
    await BaseRecord.create_all(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    writer = Registry(modules=["labox.builtin"], default_storage=FsspecStorage(root))
    async with sessions() as session:
        saved = await save_one(StorableValue(VALUE), registry=writer, session=session)
        streamed = await save_one(StorableStream(_rows()), registry=writer, session=session)
    return engine, saved, streamed


async def _load_all(engine: Any, saved: Any, streamed: Any, storage: FsspecStorage) -> None:
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    reader = Registry(modules=["labox.builtin"], default_storage=storage)
    async with sessions() as session, AsyncExitStack() as stack:
        loaded = await load_one(saved, StorableValue, registry=reader, session=session)
        loaded_stream = await load_one(
            streamed, StorableStream, registry=reader, session=session, stack=stack
        )
        rows = [row async for row in loaded_stream.value_stream]
    assert loaded.value == VALUE
    assert rows == [{"i": i} for i in range(300)]


@pytest.mark.parametrize("configured", [True, False], ids=["relocated", "fallback"])
async def test_a_lake_copied_from_a_local_folder_loads_through_labox(
    backend: BackendInfo, tmp_path: Path, configured: bool
) -> None:
    """local -> local, memory or S3; then the source is gone and every record loads."""
    root = tmp_path / "lake"
    engine, saved, streamed = await _saved_lake(root, tmp_path / "labox.db")
    try:
        dst_url = backend.new_url()
        result = await copy_lake(FsspecStorage(root), make(backend, dst_url))
        assert result.ok, result.problems
        assert (result.copied, result.present) == (2, 0)
        shutil.rmtree(root)
        relocated = {str(root): dst_url} if configured else None
        await _load_all(engine, saved, streamed, make(backend, dst_url, relocated=relocated))
    finally:
        await engine.dispose()


def test_the_command_copies_with_each_side_its_own_options(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "lake"
    engine, saved, streamed = asyncio.run(_saved_lake(root, tmp_path / "labox.db"))
    asyncio.run(engine.dispose())
    dst_url = backend.new_url()
    args = ["copy", str(root), dst_url, *dst_options(backend)]
    assert main(args) == 0
    report = capsys.readouterr().err
    assert "2 copied, 0 already there" in report
    assert "OK: every object is at the destination" in report
    assert main(args) == 0  # again: nothing sent, everything already there
    assert "0 copied, 2 already there" in capsys.readouterr().err
    shutil.rmtree(root)
    storage = make(backend, dst_url, relocated={root: dst_url})

    async def load() -> None:
        try:
            await _load_all(engine, saved, streamed, storage)
        finally:
            await engine.dispose()

    asyncio.run(load())


def test_a_corrupt_source_object_is_reported_and_not_copied(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(_corrupt_sources(backend, tmp_path))
    assert main(["copy", str(tmp_path / "lake"), backend.new_url(), *dst_options(backend)]) == 1
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert "1 copied, 0 already there, 2 corrupt at the source, 0 failed" in err  # by path: no size
    assert "FAILED: 2 object(s) not copied" in err


async def _corrupt_sources(backend: BackendInfo, tmp_path: Path) -> None:
    src = FsspecStorage(tmp_path / "lake", chunk_size=CHUNK)
    good, bad, short = payload(3 * CHUNK + 5, 1), payload(CHUNK // 2, 2), payload(CHUNK, 3)
    kept = await write(src, good, "stream")
    rotted = await write(src, bad, "blob")
    cut = await write(src, short, "blob")
    rotten = tmp_path / "lake" / rotted["path"]
    rotten.write_bytes(b"X" + bad[1:])  # same size, other bytes
    (tmp_path / "lake" / cut["path"]).write_bytes(short[:100])
    dst_url = backend.new_url()
    dst = make(backend, dst_url)
    result = await copy_lake(src, dst, [kept, rotted, cut])
    assert not result.ok
    assert result.copied == 1
    assert sorted(p.kind for p in result.problems) == ["corrupt", "truncated"]
    assert await dst.read_data({**kept, "root": dst.location.root}) == good
    fs = backend.fs()
    root = dst.location.root
    assert not fs.exists(f"{root}/{rotted['path']}")
    assert not fs.exists(f"{root}/{cut['path']}")
    assert [p for p in fs.find(root) if "/.lakery-tmp/" in p] == []  # nothing half-written


async def test_a_damaged_object_at_the_destination_is_replaced(
    backend: BackendInfo, tmp_path: Path
) -> None:
    src = FsspecStorage(tmp_path / "lake", chunk_size=CHUNK)
    small, large = payload(1000, 4), payload(2 * CHUNK + 3, 5)
    pointers = [await write(src, small, "blob"), await write(src, large, "stream")]
    dst = make(backend, backend.new_url())
    assert (await copy_lake(src, dst)).copied == 2
    fs = backend.fs()
    root = dst.location.root
    fs.pipe_file(f"{root}/{pointers[0]['path']}", b"short")  # wrong size: replaced
    fs.pipe_file(f"{root}/{pointers[1]['path']}", b"Y" + large[1:])  # right size
    result = await copy_lake(src, dst)
    assert (result.copied, result.present) == (1, 1)
    assert fs.cat_file(f"{root}/{pointers[0]['path']}") == small
    result = await copy_lake(src, dst, verify_present=True)  # re-hashed: replaced
    assert (result.copied, result.present) == (1, 1), result.problems
    assert fs.cat_file(f"{root}/{pointers[1]['path']}") == large


async def test_only_the_pointed_objects_and_never_temps_or_strays_are_copied(
    backend: BackendInfo, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    src = FsspecStorage(root, chunk_size=CHUNK)
    pointers = [
        await src.write_data(payload(500 + i, i), digest_of(payload(500 + i, i)), {})
        for i in range(4)
    ]
    (root / ".lakery-tmp").mkdir(exist_ok=True)
    (root / ".lakery-tmp" / "leftover").write_bytes(b"temp")
    (root / "notes.txt").write_bytes(b"not an object")
    dst = make(backend, backend.new_url())
    result = await copy_lake(src, dst, pointers[:2])
    assert (result.copied, result.ok) == (2, True)
    fs = backend.fs()
    assert len(fs.find(dst.location.root)) == 2
    result = await copy_lake(src, dst)
    assert (result.copied, result.present, result.unmatched) == (2, 2, 1)
    found = sorted(p[len(dst.location.root) + 1 :] for p in fs.find(dst.location.root))
    assert found == sorted(p["path"] for p in pointers)


async def test_a_copy_into_its_own_source_is_refused(tmp_path: Path) -> None:
    src = FsspecStorage(tmp_path / "lake")
    for dst in (tmp_path / "lake", tmp_path / "lake" / "inner"):
        with pytest.raises(ValueError, match="inside it"):
            await copy_lake(src, FsspecStorage(dst))
    assert not (tmp_path / "lake" / "inner").exists()


def test_nothing_to_copy_exits_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A mistyped SRC is not "OK": nothing found exits 3, unless --allow-empty."""
    args = ["copy", str(tmp_path / "no-such-lake"), str(tmp_path / "dst")]
    assert main(args) == 3
    assert "EMPTY: no object to copy under" in capsys.readouterr().err
    assert main([*args, "--allow-empty"]) == 0


@pytest.mark.backends("s3")
async def test_the_copy_keeps_the_content_type_its_path_names(
    backend: BackendInfo, tmp_path: Path
) -> None:
    src = FsspecStorage(tmp_path / "lake", chunk_size=CHUNK)
    small, large = b'{"a": 1}', b"[" + b"1," * (2 * CHUNK) + b"1]"
    pointers = [
        await src.write_data(data, digest_of(data, "application/json"), {})
        for data in (small, large)
    ]
    dst = make(backend, backend.new_url())
    assert (await copy_lake(src, dst)).copied == 2
    for pointer in pointers:
        assert pointer["path"].endswith(".json")
        where = f"s3://{dst.location.root}/{pointer['path']}"
        assert backend.metadata(where)["content_type"] == "application/json"


def test_the_copy_draws_a_progress_bar_on_a_terminal(tmp_path: Path) -> None:
    files = []
    for index in range(3):
        files.append(tmp_path / f"f{index}.bin")
        files[-1].write_bytes(payload(300_000, seed=index))
    command = [sys.executable, "-m", "lakery_fsspec"]
    lake = tmp_path / "lake"
    subprocess.run(
        [*command, "put", str(lake), *map(str, files)], capture_output=True, timeout=60, check=True
    )
    status, output, seen = on_a_terminal([*command, "copy", str(lake), str(tmp_path / "dst")])
    assert (status, output) == (0, b"")
    terminal = seen.decode()
    assert "\r" in terminal
    assert "copy 878.9 KiB" in terminal  # 3 x 300,000 bytes read
    assert "3 copied, 0 already there" in terminal
