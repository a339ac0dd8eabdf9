"""The main job: save and load data through labox with FsspecStorage, saying what happened.

    python -m lakery_fsspec.demo [URL] [--timeout SECONDS]   (= lakery-fsspec demo)

URL defaults to ``$LAKERY_FSSPEC_URL`` or the local directory ``./lake``. The labox
database is a SQLite file beside a local lake (``./lake.db``), or ``./lakery-demo.db``.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

from labox.builtin import StorableStream, StorableValue
from labox.core import BaseRecord, Registry, load_one, save_one
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from lakery_fsspec._storage import FsspecStorage

__all__ = ["DEFAULT_URL", "main", "run_demo"]

DEFAULT_URL = "./lake"


async def run_demo(
    url: str,
    database: str,
    storage_options: dict[str, Any] | None = None,
    echo: Callable[[str], object] = print,
    call_timeout: float | None = None,
) -> dict[str, Any]:
    """Save a value and a stream to ``url`` through labox, load both back, and compare."""
    storage = FsspecStorage(url, storage_options=storage_options, timeout=call_timeout)
    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    engine = create_async_engine(database)
    await BaseRecord.create_all(engine)
    echo(f"storage   {storage!r}")
    echo(f"database  {database}")

    value = {"experiment": "lakery-fsspec demo", "scores": [0.91, 0.87, 0.95]}
    rows = [{"step": step, "loss": round(1 / (step + 1), 4)} for step in range(1000)]
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    try:
        async with sessions() as session:
            saved_value = await save_one(StorableValue(value), registry=registry, session=session)
            saved_stream = await save_one(
                StorableStream(_stream(rows)), registry=registry, session=session
            )
        echo(f"saved     a value  -> manifest {saved_value.id}")
        echo(f"saved     a stream -> manifest {saved_stream.id}")

        async with sessions() as session, AsyncExitStack() as stack:
            loaded_value = await load_one(
                saved_value, StorableValue, registry=registry, session=session
            )
            loaded_stream = await load_one(
                saved_stream, StorableStream, registry=registry, session=session, stack=stack
            )
            loaded_rows = [row async for row in loaded_stream.value_stream]
    finally:
        await engine.dispose()

    ok = loaded_value.value == value and loaded_rows == rows
    echo(f"loaded    value {'matches' if loaded_value.value == value else 'DIFFERS'}")
    same = "matches" if loaded_rows == rows else "DIFFERS"
    echo(f"loaded    stream of {len(loaded_rows)} rows {same}")
    for path in await _stored_paths(storage):
        echo(f"object    {path}")
    return {"ok": ok, "value": loaded_value.value, "rows": len(loaded_rows)}


async def _stream(rows: Sequence[dict[str, Any]]) -> AsyncIterator[dict[str, Any]]:
    for row in rows:
        yield row


async def _stored_paths(storage: FsspecStorage) -> list[str]:
    """Every object under the root, read back and checked (``verify``'s walk)."""
    found: list[str] = []
    await storage.verify(on_object=lambda checked: found.append(checked.url))
    return sorted(found)


def main(argv: Sequence[str] | None = None, *, timeout: float | None = None) -> int:
    """Run the demo on the URL given, ``$LAKERY_FSSPEC_URL`` or ``./lake`` (no options:
    ``lakery-fsspec demo`` parses them and explains errors)."""
    args = list(sys.argv[1:] if argv is None else argv)
    url = args[0] if args else os.environ.get("LAKERY_FSSPEC_URL", DEFAULT_URL)
    if "://" not in url or url.startswith("file://"):
        lake = Path(url.removeprefix("file://")).resolve()
        lake.mkdir(parents=True, exist_ok=True)
        database = f"sqlite+aiosqlite:///{lake.with_name(lake.name + '.db')}"
    else:
        database = "sqlite+aiosqlite:///lakery-demo.db"
    result = asyncio.run(run_demo(url, database, call_timeout=timeout))
    print("ok" if result["ok"] else "FAILED: what was loaded differs from what was saved")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    from lakery_fsspec.cli.commands import main as command

    raise SystemExit(command(["demo", *sys.argv[1:]]))
