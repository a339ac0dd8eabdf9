"""``lakery-fsspec copy --db URL [--rewrite]``: the objects labox's records point at under
SRC are copied (garbage and other lakes' objects stay behind), and with ``--rewrite`` the
records are pointed at DST once their object is verified there, so they load from DST
with no ``relocated=``."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from gcdb import pointers
from helpers import CHUNK, digest_of, payload
from labox.builtin import StorableValue
from labox.core import BaseRecord, ManifestRecord, Registry, load_one, save_one
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from lakery_fsspec import FsspecPointer, FsspecStorage
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("local", "s3")

VALUES = [{"n": n, "pad": "x" * (n * 9000)} for n in range(4)]


def make(backend: BackendInfo, url: str | Path, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


def dst_options(backend: BackendInfo) -> list[str]:
    args: list[str] = []
    for key, value in backend.storage_options.items():
        args += ["--dst-option", f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


async def _records(tmp_path: Path) -> tuple[str, list[Any], Any]:
    """Records of VALUES in lake A, one in lake C (same database), garbage in A."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'labox.db'}"
    engine = create_async_engine(url)
    await BaseRecord.create_all(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    lake_a = FsspecStorage(tmp_path / "A")
    in_a = Registry(modules=["labox.builtin"], default_storage=lake_a)
    in_c = Registry(modules=["labox.builtin"], default_storage=FsspecStorage(tmp_path / "C"))
    async with sessions() as session:
        saved = [await save_one(StorableValue(v), registry=in_a, session=session) for v in VALUES]
        other = await save_one(StorableValue({"c": 1}), registry=in_c, session=session)
    garbage = payload(3000, 99)
    await lake_a.write_data(garbage, digest_of(garbage), {})
    await engine.dispose()
    return url, saved, other


async def _load(url: str, saved: list[Any], storage: FsspecStorage) -> list[Any]:
    engine = create_async_engine(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    reader = Registry(modules=["labox.builtin"], default_storage=storage)
    try:
        async with sessions() as session:
            # Fresh from the database, not the records save_one returned (their contents
            # hold the pointers as saved).
            fresh = [await session.get_one(ManifestRecord, s.id) for s in saved]
            return [
                (await load_one(f, StorableValue, registry=reader, session=session)).value
                for f in fresh
            ]
    finally:
        await engine.dispose()


def test_db_copies_only_what_records_point_at(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = asyncio.run(_records(tmp_path))
    dst_url = backend.new_url()
    assert main(["copy", str(tmp_path / "A"), dst_url, "--db", url, *dst_options(backend)]) == 0
    assert "4 copied, 0 already there" in capsys.readouterr().err
    dst = make(backend, dst_url)
    found = backend.fs().find(dst.location.root)
    assert len(found) == 4  # not the garbage, not lake C's object
    configs = asyncio.run(pointers(url))
    assert all(c["root"] != dst.location.root for c in configs)  # no --rewrite: untouched


def test_rewrite_points_the_records_at_dst(
    backend: BackendInfo,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url, saved, other = asyncio.run(_records(tmp_path))
    dst_url = backend.new_url()
    args = ["copy", str(tmp_path / "A"), dst_url, "--db", url, "--rewrite"]
    assert main([*args, *dst_options(backend)]) == 0
    assert "4 labox record(s) rewritten" in capsys.readouterr().err
    dst = make(backend, dst_url)
    configs = asyncio.run(pointers(url))
    assert sum(c["root"] == dst.location.root for c in configs) == 4
    assert sum(c["root"] == str(tmp_path / "C") for c in configs) == 1  # another lake's
    shutil.rmtree(tmp_path / "A")
    caplog.set_level(logging.WARNING, "lakery_fsspec")
    # Read from DST as recorded: no relocated=, no fallback (which would warn).
    elsewhere = make(backend, backend.new_url(), router=None)
    assert asyncio.run(_load(url, saved, elsewhere)) == VALUES
    assert [r for r in caplog.records if r.name.startswith("lakery_fsspec")] == []
    assert asyncio.run(_load(url, [other], FsspecStorage(tmp_path / "C"))) == [{"c": 1}]


def test_a_record_whose_object_is_not_copied_is_not_rewritten(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = asyncio.run(_records(tmp_path))
    rotten = _rot_one(url, tmp_path / "A")
    dst_url = backend.new_url()
    args = ["copy", str(tmp_path / "A"), dst_url, "--db", url, "--rewrite"]
    assert main([*args, *dst_options(backend)]) == 1
    out, err = capsys.readouterr()
    assert "corrupt: " in out
    assert "3 labox record(s) rewritten" in err
    after = asyncio.run(pointers(url))
    assert rotten in after  # still names A, where its (damaged) object is
    with pytest.raises(SystemExit, match="2"):
        main(["copy", "--rewrite", str(tmp_path / "A"), dst_url])
    assert "give --db DATABASE_URL" in capsys.readouterr().err


def test_a_resumed_rewrite_rewrites_what_earlier_runs_landed(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = asyncio.run(_records(tmp_path))
    database = tmp_path / "labox.db"
    shutil.copy(database, tmp_path / "before.db")
    dst_url, journal = backend.new_url(), tmp_path / "copy.journal"
    args = ["copy", str(tmp_path / "A"), dst_url, "--db", url, "--rewrite", "--resume"]
    args += [str(journal), "--concurrency", "1", *dst_options(backend)]
    assert main(args) == 0
    assert "4 labox record(s) rewritten" in capsys.readouterr().err
    # As if the run had stopped after two objects, before its rewrite.
    shutil.copy(tmp_path / "before.db", database)
    journal.write_text("".join(journal.read_text().splitlines(keepends=True)[:3]))
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 object(s) handled by earlier runs" in err
    assert "4 labox record(s) rewritten" in err  # the journal's two as well
    dst = make(backend, dst_url)
    assert sum(c["root"] == dst.location.root for c in asyncio.run(pointers(url))) == 4


def test_a_resumed_copy_says_it_does_not_retry_what_was_not_copied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url, _, _ = asyncio.run(_records(tmp_path))
    _rot_one(url, tmp_path / "A")
    journal = str(tmp_path / "copy.journal")
    args = ["copy", str(tmp_path / "A"), str(tmp_path / "B"), "--resume", journal]
    assert main(args) == 1
    capsys.readouterr()
    assert main(args) == 1
    out, err = capsys.readouterr()
    assert "corrupt: " in out  # the earlier run's problem, told again
    assert "1 of them were not copied and are not retried by --resume" in err


def _rot_one(url: str, root: Path) -> FsspecPointer:
    """Damage (same size) the object of one record under ``root``; its pointer."""
    rotten = next(c for c in asyncio.run(pointers(url)) if c["root"] == str(root))
    target = root / rotten["path"]
    target.write_bytes(b"?" + target.read_bytes()[1:])
    return rotten
