"""The race harness: writers saving through labox (many saves of content already stored,
unreferenced and old), record deleters and sweeps with no grace period, all at once, with
writers killed mid-save (SIGKILL). Afterwards every labox record loads (no dangling
pointer: quarantine, the read that puts back and freshening suffice while the trash is
kept), and after two sweeps with nothing running and both grace periods at zero, every
unreferenced object is gone and the trash is empty.

CI runs it for ``RACE_SECONDS`` per backend; ``nox -s gc-soak`` sets
``LAKERY_GC_SOAK_SECONDS`` for a longer run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from gcdb import create_db, db_url, drop, listing, load_all, manifests, pointers, save, value
from helpers import CHUNK, Stream, chunked
from labox.common.exceptions import NoStorageData

from lakery_fsspec import FsspecStorage, GCRefusedError, collect_garbage

pytestmark = pytest.mark.backends("local", "s3", "gcs", "azure", "sftp")

RACE_SECONDS = float(os.environ.get("LAKERY_GC_SOAK_SECONDS") or 8)
POOL = 24
"""Values the writers pick from (most saves are of content already stored)."""
DEADLINE = 120 + 4 * RACE_SECONDS
"""Seconds the whole test may take on one backend before it is failed."""

WRITER = """
import asyncio, json, os, random, sys
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
from labox.builtin import StorableValue
from labox.core import Registry, save_one
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine
from labox.common.exceptions import NoStorageData

from lakery_fsspec import FsspecStorage

url, options, db = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
seed, pool = int(sys.argv[4]), int(sys.argv[5])


def value(n):  # as gcdb.value for the pool; new content beyond it
    return {"n": n, "pad": "x" * (1000 + 37 * (n % 1000))}


async def main():
    storage = FsspecStorage(url, storage_options=options, chunk_size=CHUNK)
    engine = create_async_engine(db, connect_args={"timeout": 60})
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    rng = random.Random(seed)
    print("ready", flush=True)
    while True:
        n = rng.randrange(pool) if rng.random() < 0.85 else 10_000 + rng.randrange(10**9)
        async with sessions() as session:
            await save_one(StorableValue(value(n)), registry=registry, session=session)


asyncio.run(main())
""".replace("CHUNK", str(CHUNK))


class Writers:
    """Writer processes; one of them is killed and started again, again and again."""

    def __init__(self, backend: BackendInfo, url: str, db: str) -> None:
        self.args = [url, json.dumps(backend.storage_options), db]
        self.seed = 0
        self.running: list[subprocess.Popen[bytes]] = []
        self.killed = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.seed += 1
        args = [*self.args, str(self.seed), str(POOL)]
        process = subprocess.Popen(
            [sys.executable, "-c", WRITER, *args],
            cwd=Path(__file__).parent.parent,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,  # read if it dies by itself
        )
        self.running.append(process)
        return process

    def check(self) -> None:
        for process in self.running:
            if process.poll() is not None:
                _, err = process.communicate()
                pytest.fail(f"a writer died by itself: {err.decode()[-3000:]}")

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGKILL)
        process.communicate()
        self.running.remove(process)
        self.killed += 1

    def kill_all(self) -> None:
        for process in list(self.running):
            self.kill(process)


async def _race(backend: BackendInfo, url: str, db: str) -> dict[str, int]:
    make = lambda: FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK)  # noqa: E731
    storage = make()
    # The pool's content stored, then unreferenced (old, with no grace): the dedup hits'.
    ids = await save(db, storage, [value(n) for n in range(POOL)])
    contents = [await storage.read_data(p) for p in await pointers(db)]
    await drop(db, ids)
    await save(db, storage, [value(n) for n in range(POOL, POOL + 4)])  # referenced
    stop = asyncio.Event()
    counts = {
        "loads": 0,
        "load raced a delete": 0,
        "refused": 0,
        "sweeps": 0,
        "quarantined": 0,
        "deleted records": 0,
        "streams": 0,
    }

    async def sweeper() -> None:
        mine = make()
        while not stop.is_set():
            try:
                result = await collect_garbage(mine, [db], grace=0)
            except GCRefusedError:
                counts["refused"] += 1  # nothing done: safe, if not expected
                continue
            counts["sweeps"] += 1
            counts["quarantined"] += result.quarantined.count
            await asyncio.sleep(0.1)  # room for the writers on a one-threaded emulator

    async def deleter() -> None:
        rng = random.Random(1)
        while not stop.is_set():
            await asyncio.sleep(0.2)
            if len(ids := await manifests(db)) > 4:
                await drop(db, rng.sample(ids, 2))
                counts["deleted records"] += 1

    async def streamer() -> None:
        """Streams of pool content, unreferenced: dedup hits through the move."""
        mine = make()
        rng = random.Random(2)
        while not stop.is_set():
            stream = Stream(chunked(rng.choice(contents), 500))
            await mine.write_data_stream(stream, stream.get_digest, {})
            counts["streams"] += 1

    async def reader() -> None:
        """Loads every record again and again (a miss puts back from the trash)."""
        mine = make()
        while not stop.is_set():
            try:
                counts["loads"] += len(await load_all(db, mine))
            except NoStorageData:
                raise  # a dangling pointer
            except Exception:
                counts["load raced a delete"] += 1
            await asyncio.sleep(0.2)

    writers = Writers(backend, url, db)
    try:
        for _ in range(2):
            writers.start()
        tasks = [
            asyncio.create_task(job()) for job in (sweeper, sweeper, deleter, streamer, reader)
        ]
        ends = time.monotonic() + RACE_SECONDS
        rng = random.Random(3)
        while time.monotonic() < ends:
            victim = writers.start()
            await asyncio.sleep(1.5 + rng.random() * 1.5)  # started, then saving
            writers.check()
            writers.kill(victim)  # mid-save, most likely
            if any(task.done() for task in tasks):
                break
        stop.set()
        await asyncio.gather(*tasks)
    finally:
        writers.kill_all()
    counts["killed writers"] = writers.killed
    return counts


def test_race(
    backend: BackendInfo, tmp_path: Path, root_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    db = db_url(tmp_path)
    asyncio.run(create_db(db))
    caplog.set_level(logging.INFO, "lakery_fsspec")
    counts = _run_within(_race(backend, root_url, db), DEADLINE)
    print(counts)
    assert counts["sweeps"] >= 2, counts
    assert counts["killed writers"] >= 2, counts
    storage = FsspecStorage(root_url, storage_options=backend.storage_options, chunk_size=CHUNK)
    raced = sum("from the trash" in record.getMessage() for record in caplog.records)
    loaded = asyncio.run(load_all(db, storage))  # every record loads
    restored = sum("from the trash" in record.getMessage() for record in caplog.records)
    print(
        f"{len(loaded)} records load; reads put back {raced} in the race, {restored - raced} after"
    )
    assert len(loaded) == len(asyncio.run(manifests(db))) > 0, counts
    for _ in range(2):
        asyncio.run(collect_garbage(storage, [db], grace=0, trash_grace=0))
    referenced = sorted({p["path"] for p in asyncio.run(pointers(db))})
    where = listing(backend, storage)
    assert where == {"lake": referenced, "trash": [], "fresh": []}, counts
    assert asyncio.run(load_all(db, storage)) == loaded


def _run_within(coroutine: Any, seconds: float) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(seconds):
            return await coroutine

    return asyncio.run(bounded())
