"""What Dask and Ray workers run: writes and labox saves through a storage they were handed.

Workers import this module by name (the engines put `tests/` and `tests/engines/` on their
PYTHONPATH), so everything here is plain module-level functions and dataclasses.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from helpers import Stream, chunked, digest_of, payload

import lakery_fsspec
from lakery_fsspec import FsspecPointer, FsspecStorage

GCSFS_FLAG = "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"


@dataclass(frozen=True)
class Content:
    """One distinct content: ``size`` deterministic bytes drawn from ``seed``."""

    seed: int
    size: int

    def data(self) -> bytes:
        return payload(self.size, seed=self.seed)


@dataclass(frozen=True)
class Write:
    """One task: write ``content`` with ``write_data`` ("blob") or ``write_data_stream``."""

    content: Content
    how: str  # "blob" | "stream"
    on_worker_loop: bool = False  # Dask only: an async task on the worker's own event loop


@dataclass(frozen=True)
class Report:
    """What a task did, where and when (wall-clock times, comparable across processes)."""

    write: Write
    pointer: FsspecPointer
    pid: int
    started: float
    finished: float
    package: str  # lakery_fsspec.__file__ as the worker imported it
    gcsfs_flag: str | None


def write_content(storage: FsspecStorage, write: Write, gate: str) -> Report:
    """A sync task, the usual shape: one ``asyncio.run`` per operation."""
    return asyncio.run(write_content_async(storage, write, gate))


async def write_content_async(storage: FsspecStorage, write: Write, gate: str) -> Report:
    """An async task (Dask runs these on the worker's event loop).

    It waits at ``gate`` for a task of the same content in another process, so that the
    two write at the same moment.
    """
    data = write.content.data()
    await rendezvous(Path(gate) / str(write.content.seed))
    started = time.time()
    if write.how == "blob":
        pointer = await storage.write_data(data, digest_of(data), {})
    else:
        stream = Stream(chunked(data, 2**20))
        pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    finished = time.time()
    return Report(write, pointer, os.getpid(), started, finished, lakery_fsspec.__file__, _flag())


@dataclass(frozen=True)
class Item:
    """One labox save: a JSON value or a stream of JSON rows, drawn from ``seed``."""

    seed: int
    kind: str  # "value" | "stream"

    def value(self) -> Any:
        return {"seed": self.seed, "numbers": list(range(self.seed * 100))}

    def rows(self) -> list[dict[str, int]]:
        return [{"seed": self.seed, "row": row} for row in range(2_000 + self.seed)]


@dataclass(frozen=True)
class Saved:
    """A labox save done in a worker: the manifest's id (hex) and the worker's process."""

    manifest_id: str
    pid: int


def save_with_labox(storage: FsspecStorage, database_url: str, item: Item) -> Saved:
    """``save_one`` in a worker, with a Registry built there (labox's does not pickle).

    The client loads the manifest by its id from the shared database.
    """
    manifest_id = asyncio.run(_save_with_labox(storage, database_url, item))
    return Saved(manifest_id, os.getpid())


async def _save_with_labox(storage: FsspecStorage, database_url: str, item: Item) -> str:
    from labox.builtin import StorableStream, StorableValue
    from labox.core import Registry, save_one
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    # Several processes commit to one SQLite file: wait for the lock rather than fail.
    engine = create_async_engine(database_url, connect_args={"timeout": 60})
    try:
        async with async_sessionmaker(engine, expire_on_commit=False)() as session:
            if item.kind == "value":
                storable: Any = StorableValue(item.value())
            else:
                storable = StorableStream(_aiter(item.rows()))
            manifest = await save_one(storable, registry=registry, session=session)
            return manifest.id.hex
    finally:
        await engine.dispose()


async def _aiter(rows: list[dict[str, int]]) -> AsyncIterator[dict[str, int]]:
    for row in rows:
        yield row


async def rendezvous(folder: Path, patience: float = 5.0, lead: float = 0.05) -> None:
    """Wait until tasks from two processes have arrived in ``folder``, then start together.

    Each arrival leaves a file named after its arrival time and process. Both processes
    compute the same start time from the two earliest arrivals (``lead`` seconds after the
    second); a later arrival finds it past and goes at once. All workers of these tests run
    on one machine, so a local folder is shared by all. After ``patience`` seconds a task
    goes alone (the test then finds fewer races and says so). The file calls block the
    loop for microseconds, as a test may.
    """
    os.makedirs(folder, exist_ok=True)
    arrival = folder / f"{time.time():.6f}_{os.getpid()}_{uuid.uuid4().hex}"
    os.close(os.open(arrival, os.O_CREAT | os.O_WRONLY))
    deadline = time.monotonic() + patience
    while time.monotonic() < deadline:
        arrivals: dict[str, float] = {}
        for name in os.listdir(folder):
            at, pid, _ = name.split("_")
            arrivals[pid] = min(arrivals.get(pid, math.inf), float(at))
        if len(arrivals) >= 2:
            start = sorted(arrivals.values())[1] + lead
            await asyncio.sleep(max(0.0, start - time.time()))
            return
        await asyncio.sleep(0.002)


def _flag() -> str | None:
    return os.environ.get(GCSFS_FLAG)
