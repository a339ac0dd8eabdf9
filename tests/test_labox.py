"""End to end through labox itself: save_one / load_one with a real SQLite database."""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from pathlib import Path

from conftest import BackendInfo
from labox.builtin import StorableStream, StorableValue
from labox.core import BaseRecord, ContentRecord, Registry, load_one, save_one
from sqlalchemy import select
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from lakery_fsspec import FsspecStorage
from lakery_fsspec.cli.demo import main


async def _rows():
    for i in range(500):
        yield {"i": i}


async def test_save_and_load_through_labox(
    backend: BackendInfo, root_url: str, tmp_path: Path
) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'labox.db'}")
    await BaseRecord.create_all(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    value = {"name": "lakery", "n": [1, 2, 3]}
    try:
        async with sessions() as session:
            saved = await save_one(StorableValue(value), registry=registry, session=session)
            streamed = await save_one(StorableStream(_rows()), registry=registry, session=session)
        async with sessions() as session, AsyncExitStack() as stack:
            contents = (await session.execute(select(ContentRecord))).scalars().all()
            loaded = await load_one(saved, StorableValue, registry=registry, session=session)
            loaded_stream = await load_one(
                streamed, StorableStream, registry=registry, session=session, stack=stack
            )
            rows = [row async for row in loaded_stream.value_stream]
    finally:
        await engine.dispose()
    assert loaded.value == value
    assert rows == [{"i": i} for i in range(500)]
    assert {c.storage_name for c in contents} == {"lakery.fsspec@v1"}
    for content in contents:
        pointer = json.loads(content.storage_config)
        assert pointer["protocol"] == backend.protocol
        assert backend.fs().exists(f"{pointer['root']}/{pointer['path']}")


def test_demo_main_job_on_a_local_directory(
    tmp_path: Path, capsys: object, monkeypatch: object
) -> None:
    lake = tmp_path / "lake"
    assert main([str(lake)]) == 0
    assert main([str(lake)]) == 0  # a second run finds its objects already stored
    out = capsys.readouterr().out  # type: ignore[attr-defined]
    assert out.count("\nok\n") == 2
    assert len(list(lake.rglob("*.json"))) == 2
    assert (tmp_path / "lake.db").exists()
