"""The client's side of the engine tests: plan the tasks, hand them to an engine, check.

An engine (Dask, Ray) only has to run a list of ``(function, args)`` calls in its worker
processes and return their results in order, within a deadline.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from uuid import UUID

from conftest import BackendInfo
from helpers import read
from worker_tasks import (
    Content,
    Item,
    Report,
    Saved,
    Write,
    save_with_labox,
    write_content,
    write_content_async,
)

import lakery_fsspec
from lakery_fsspec import FsspecStorage

STREAM_SIZE = 20 * 2**20
BLOB_SIZES = (1, 100, 4_096, 65_536, 65_537, 300_000, 2**20 + 3)
COPIES = 5  # tasks per distinct content, submitted side by side so that they run together
DEADLINE = 300.0  # seconds for one batch of tasks, then the test fails (a hang, not a slow run)


class Engine(Protocol):
    """Runs calls in worker processes; results in call order, or an error at ``timeout``."""

    name: str
    runs_async: bool  # whether an ``async def`` task runs on the worker's own event loop

    def run(
        self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float
    ) -> list[Any]: ...


@dataclass
class Summary:
    """What one scenario did, for the session's report."""

    engine: str
    backend: str
    tasks: int
    contents: int
    objects: int
    pointers: int
    processes: int
    raced: int | None  # contents written by two processes at overlapping times
    seconds: float

    def line(self) -> str:
        raced = "" if self.raced is None else f", {self.raced} written by two at once"
        return (
            f"{self.engine} on {self.backend}: {self.tasks} tasks over {self.contents} contents"
            f" in {self.processes} worker processes{raced}; {self.objects} objects,"
            f" {self.pointers} pointers, no temp object; {self.seconds:.1f} s"
        )


def plan_writes(stream_size: int, on_worker_loop: bool) -> list[Write]:
    """200 writes over 40 contents: 34 blobs from 0 B to just over 1 MiB, 6 of ``stream_size``.

    Each content gets ``COPIES`` adjacent tasks, through both write paths: a stream content
    is written once with ``write_data`` and otherwise streamed, a blob content streamed once.
    With ``on_worker_loop`` every other task is an ``async def`` (Dask's worker loop).
    """
    contents = [Content(seed=0, size=0)]
    contents += [Content(seed, BLOB_SIZES[seed % len(BLOB_SIZES)]) for seed in range(1, 34)]
    contents += [Content(seed, stream_size) for seed in range(34, 40)]
    writes: list[Write] = []
    for content in contents:
        streamed = content.size == stream_size
        for copy in range(COPIES):
            how = "stream" if streamed != (copy == COPIES - 1) else "blob"
            writes.append(Write(content, how, on_worker_loop and copy % 2 == 1))
    return writes


def check_concurrent_writes(
    engine: Engine, backend: BackendInfo, stream_size: int, gate: Path
) -> Summary:
    """Many workers write the same contents at once; the client finds each exactly once."""
    started = time.monotonic()
    storage = FsspecStorage(backend.new_url(), storage_options=backend.storage_options)
    # Used here first (filesystems, pools, a loop copy): workers get a used storage's pickle.
    assert asyncio.run(storage.list_temp()) == []
    writes = plan_writes(stream_size, engine.runs_async)
    calls = [
        (
            write_content_async if write.on_worker_loop else write_content,
            (storage, write, str(gate)),
        )
        for write in writes
    ]
    reports: list[Report] = engine.run(calls, DEADLINE)

    assert [report.write for report in reports] == writes
    _check_workers(reports)
    by_content: dict[Content, list[Report]] = defaultdict(list)
    for report in reports:
        by_content[report.write.content].append(report)
    pointers = {content: _one_pointer(rs) for content, rs in by_content.items()}
    assert len({pointer["path"] for pointer in pointers.values()}) == len(pointers)
    for pointer in pointers.values():
        assert (pointer["protocol"], pointer["root"]) == (
            storage.location.protocol,
            storage.location.root,
        )

    asyncio.run(_read_back(storage, pointers))
    objects = _objects_and_no_temp(storage, backend)
    assert objects == {pointer["path"] for pointer in pointers.values()}

    raced = sum(_raced(rs) for rs in by_content.values())
    # Tasks meet at a gate, so most contents have two processes writing them at once (the
    # exceptions: local writes of a few bytes, shorter than the wake-up jitter).
    assert raced >= 0.75 * len(by_content), f"only {raced} contents were written concurrently"
    return Summary(
        engine.name,
        backend.name,
        tasks=len(reports),
        contents=len(by_content),
        objects=len(objects),
        pointers=len(pointers),
        processes=len({report.pid for report in reports}),
        raced=raced,
        seconds=time.monotonic() - started,
    )


def check_labox(engine: Engine, backend: BackendInfo, database: Path) -> Summary:
    """``save_one`` in the workers (same items saved by several at once), ``load_one`` here."""
    started = time.monotonic()
    storage = FsspecStorage(backend.new_url(), storage_options=backend.storage_options)
    database_url = f"sqlite+aiosqlite:///{database}"
    asyncio.run(_create_tables(database_url))
    items = [Item(seed, "value" if seed % 2 else "stream") for seed in range(1, 7)]
    planned = [item for item in items for _ in range(4)]
    saved: list[Saved] = engine.run(
        [(save_with_labox, (storage, database_url, item)) for item in planned], DEADLINE
    )
    ids = [save.manifest_id for save in saved]
    assert len(set(ids)) == len(planned)  # one manifest per save
    pids = {save.pid for save in saved}
    assert os.getpid() not in pids
    assert len(pids) >= 2, f"all saves ran in one process {pids}"

    pointers = asyncio.run(_load_all(storage, database_url, list(zip(ids, planned, strict=True))))
    assert len(pointers) == len(planned)  # one content record per save ...
    distinct = {json.dumps(pointer, sort_keys=True) for pointer in pointers}
    assert len(distinct) == len(items)  # ... and one pointer per distinct item
    objects = _objects_and_no_temp(storage, backend)
    assert objects == {pointer["path"] for pointer in pointers}
    return Summary(
        engine.name,
        f"{backend.name} (labox)",
        tasks=len(planned),
        contents=len(items),
        objects=len(objects),
        pointers=len(distinct),
        processes=len(pids),
        raced=None,
        seconds=time.monotonic() - started,
    )


def worker_environment() -> dict[str, str]:
    """Environment for worker processes: this tree's package and test modules first, and
    gcsfs's flag set before any worker imports gcsfs."""
    tests = Path(__file__).resolve().parent.parent
    package_root = Path(lakery_fsspec.__file__).resolve().parent.parent
    paths = [str(package_root), str(tests), str(tests / "engines")]
    inherited = os.environ.get("PYTHONPATH")
    return {
        "PYTHONPATH": os.pathsep.join([*paths, *([inherited] if inherited else [])]),
        "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
    }


def _check_workers(reports: list[Report]) -> None:
    expected = Path(lakery_fsspec.__file__).resolve()
    packages = {Path(report.package).resolve() for report in reports}
    assert packages == {expected}, f"workers imported {packages}, not {expected}"
    assert {report.gcsfs_flag for report in reports} == {"false"}
    pids = {report.pid for report in reports}
    assert os.getpid() not in pids
    assert len(pids) >= 2, f"all tasks ran in one process {pids}"


def _one_pointer(reports: list[Report]) -> Any:
    shown = {json.dumps(report.pointer, sort_keys=True) for report in reports}
    assert len(shown) == 1, f"one content, several pointers: {shown}"
    return reports[0].pointer


def _raced(reports: list[Report]) -> bool:
    """Whether two different processes were writing this content at the same moment."""
    return any(
        a.pid != b.pid and a.started < b.finished and b.started < a.finished
        for i, a in enumerate(reports)
        for b in reports[i + 1 :]
    )


async def _read_back(storage: FsspecStorage, pointers: dict[Content, Any]) -> None:
    async def check(content: Content, pointer: Any) -> None:
        data = content.data()
        how = "stream" if len(data) > storage.chunk_size else "blob"
        assert await read(storage, pointer, how) == data, f"{content} read back differs"

    await asyncio.gather(*(check(content, pointer) for content, pointer in pointers.items()))


def _objects_and_no_temp(storage: FsspecStorage, backend: BackendInfo) -> set[str]:
    """The object paths under the storage root, relative to it; asserts no temp object."""
    root = storage.location.root.rstrip("/")
    found = backend.fs().find(root)
    relative = {path[len(root) + 1 :] for path in found if path.startswith(root + "/")}
    assert len(relative) == len(found), f"{found} not all under {root}"
    temps = {path for path in relative if path.startswith(storage.temp_prefix + "/")}
    assert temps == set(), f"temp objects left behind: {sorted(temps)}"
    assert asyncio.run(storage.list_temp()) == []
    return {path for path in relative if not path.startswith(".lakery-fresh/")}  # gc's markers


async def _create_tables(database_url: str) -> None:
    from labox.core import BaseRecord
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(database_url)
    try:
        await BaseRecord.create_all(engine)
    finally:
        await engine.dispose()


async def _load_all(
    storage: FsspecStorage, database_url: str, saved: list[tuple[str, Item]]
) -> list[Any]:
    """``load_one`` each saved item with the client's own Registry; returns the pointers."""
    from labox.builtin import StorableStream, StorableValue
    from labox.core import ContentRecord, ManifestRecord, Registry, load_one
    from sqlalchemy import select
    from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

    registry = Registry(modules=["labox.builtin"], default_storage=storage)
    engine = create_async_engine(database_url)
    try:
        sessions = async_sessionmaker(engine, expire_on_commit=False)
        for manifest_id, item in saved:
            async with sessions() as session, AsyncExitStack() as stack:
                manifest = await session.get(ManifestRecord, UUID(manifest_id))
                assert manifest is not None, f"manifest {manifest_id} of {item} not in database"
                if item.kind == "value":
                    value = await load_one(
                        manifest, StorableValue, registry=registry, session=session
                    )
                    assert value.value == item.value()
                else:
                    stream = await load_one(
                        manifest, StorableStream, registry=registry, session=session, stack=stack
                    )
                    assert [row async for row in stream.value_stream] == item.rows()
        async with sessions() as session:
            contents = (await session.execute(select(ContentRecord))).scalars().all()
    finally:
        await engine.dispose()
    assert {content.storage_name for content in contents} == {FsspecStorage.name}
    return [json.loads(content.storage_config) for content in contents]


ENGINE_BACKENDS = ("local", "s3", "gcs", "azure")
"""memory:// is per process, so engines run on every other backend."""


def parametrize_backends(metafunc: Any) -> None:
    """Parametrize ``backend_name`` over the selected backends (``--backends``) that engines
    can share. Not the session-scoped ``backend`` fixture: pytest would then regroup the
    tests by backend across modules and start each engine once per backend."""
    if "backend_name" not in metafunc.fixturenames:
        return
    from conftest import selected_backends

    names = [name for name in selected_backends(metafunc.config) if name in ENGINE_BACKENDS]
    if not names:
        raise ValueError(f"--backends selects none of {ENGINE_BACKENDS}, which engines need")
    metafunc.parametrize("backend_name", names)


def backend_info(request: Any, name: str) -> BackendInfo:
    """The backend ``name``, its emulator started once per session (as conftest does)."""
    if name == "local":
        root = request.getfixturevalue("tmp_path_factory").mktemp("engines-local")
        return BackendInfo(name, {}, str(Path(root).resolve()))
    server = request.getfixturevalue(f"{name}_server")
    return BackendInfo(name, server.storage_options, server.bucket, server)


def report(config: Any, summary: Summary) -> None:
    """Show a summary line in the terminal, past pytest's output capture."""
    terminal = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if terminal is None or capture is None:
        return
    with capture.global_and_fixture_disabled():
        terminal.write_line(f"\n  {summary.line()}")
