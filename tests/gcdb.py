"""A labox database and a lake for the gc tests: values saved through labox (records),
garbage written around it, records deleted, records loaded, what is where."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from conftest import BackendInfo
from helpers import digest_of
from labox.builtin import StorableValue
from labox.core import BaseRecord, ContentRecord, ManifestRecord, Registry, load_one, save_one
from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine

from lakery_fsspec import FsspecPointer, FsspecStorage
from lakery_fsspec._trash import FRESH, TRASH

SQLITE_ARGS = {"timeout": 60}
"""Writers in several processes share one SQLite file: wait for its lock."""


def db_url(tmp_path: Path, name: str = "labox.db") -> str:
    return f"sqlite+aiosqlite:///{tmp_path / name}"


def engine_of(url: str) -> AsyncEngine:
    return create_async_engine(url, connect_args=SQLITE_ARGS)


async def create_db(url: str) -> None:
    engine = engine_of(url)
    try:
        await BaseRecord.create_all(engine)
    finally:
        await engine.dispose()


def value(n: int) -> dict[str, Any]:
    """The ``n``th value of the tests: some kilobytes, its own content."""
    return {"n": n, "pad": "x" * (1000 + 37 * n)}


async def save(url: str, storage: FsspecStorage, values: Iterable[Any]) -> list[Any]:
    """Save each value through labox; the manifests' ids."""
    engine = engine_of(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    try:
        ids: list[Any] = []
        for v in values:
            async with sessions() as session:
                saved = await save_one(StorableValue(v), registry=registry, session=session)
                ids.append(saved.id)
        return ids
    finally:
        await engine.dispose()


async def drop(url: str, manifest_ids: Iterable[Any]) -> None:
    """Delete manifests and their content records (what a user deleting data does)."""
    engine = engine_of(url)
    try:
        async with engine.begin() as connection:
            for manifest_id in manifest_ids:
                await connection.execute(
                    delete(ContentRecord).where(ContentRecord.manifest_id == manifest_id)
                )
                await connection.execute(
                    delete(ManifestRecord).where(ManifestRecord.id == manifest_id)
                )
    finally:
        await engine.dispose()


async def manifests(url: str) -> list[Any]:
    return await _column(url, ManifestRecord.id)


async def pointers(url: str) -> list[FsspecPointer]:
    return [json.loads(config) for config in await _column(url, ContentRecord.storage_config)]


async def _column(url: str, column: Any) -> list[Any]:
    """Every row's value of ``column``."""
    engine = engine_of(url)
    try:
        async with engine.connect() as connection:
            return [row[0] for row in await connection.execute(select(column))]
    finally:
        await engine.dispose()


async def load_all(url: str, storage: FsspecStorage) -> list[Any]:
    """Load every manifest's value from ``storage`` (each record must load)."""
    engine = engine_of(url)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    try:
        async with sessions() as session:
            ids = [row[0] for row in await session.execute(select(ManifestRecord.id))]
            loaded: list[Any] = []
            for manifest_id in ids:
                record = await session.get_one(ManifestRecord, manifest_id)
                storable = await load_one(record, StorableValue, registry=registry, session=session)
                loaded.append(storable.value)
            return sorted(loaded, key=lambda v: v["n"])
    finally:
        await engine.dispose()


async def garbage(storage: FsspecStorage, data: bytes) -> FsspecPointer:
    """An object no record references."""
    return await storage.write_data(data, digest_of(data), {})


def listing(backend: BackendInfo, storage: FsspecStorage) -> dict[str, list[str]]:
    """The files under the storage's root by where they are: ``lake`` (not the temp
    folder), ``trash`` (relative to the trash), ``fresh`` (markers)."""
    fs = backend.fs()
    root = storage.location.root.rstrip("/")
    try:
        found = [str(path)[len(root) + 1 :] for path in fs.find(root)]
    except FileNotFoundError:
        found = []
    kinds: dict[str, list[str]] = {"lake": [], "trash": [], "fresh": []}
    for path in sorted(found):
        top = path.split("/", 1)[0]
        if top == TRASH:
            kinds["trash"].append(path[len(TRASH) + 1 :])
        elif top == FRESH:
            kinds["fresh"].append(path)
        elif top != storage.temp_prefix:
            kinds["lake"].append(path)
    return kinds
