"""``collect_garbage``'s sweep on a lake of many objects, and what freshening costs a
write that finds its content already stored.

``python -m benchmarks.gc [--objects N ...] [--backends local,s3,...] [--hits H]``

Sweep (local files): a lake of N small objects at the default template's paths, half of
them referenced by N/2 labox content records in SQLite. Each size runs in a fresh process
(so its peak RSS is its own): a dry run (list, read the references, classify), a sweep
with no grace period (the same, then quarantine N/2), and a sweep with no trash grace
(the same, then delete N/2 from the trash). Printed: seconds, objects listed per second,
objects moved or deleted per second, and the peak RSS growth over the process's RSS
before the run (the lake and the database are made before).

Freshen (every backend given): H dedup hits (``write_data`` of content already stored)
with the marker, and H with the marker write patched out, alternating in rounds;
printed: the median milliseconds per hit of each, and their difference (the marker's
put).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

SIZES = (10_000, 100_000)
BACKENDS = ("local", "memory", "s3", "gcs", "azure", "sftp")


def _lake(root: Path, count: int) -> list[str]:
    """``count`` objects of 64 bytes at the default template's paths; their paths."""
    paths: list[str] = []
    for index in range(count):
        data = hashlib.sha256(str(index).encode()).digest() * 2
        digest = hashlib.sha256(data).hexdigest()
        path = f"{digest[:2]}/{digest}.bin"
        (root / digest[:2]).mkdir(exist_ok=True)
        (root / path).write_bytes(data)
        paths.append(path)
    return paths


async def _database(url: str, root: str, paths: list[str]) -> None:
    """Content records pointing at ``paths`` (one each), in batches."""
    from labox.core.database import BaseRecord, ContentRecord, SerializerTypeEnum
    from sqlalchemy import insert
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        await BaseRecord.create_all(engine)
        manifest = uuid.uuid4()
        rows = [
            {
                "id": uuid.uuid4(),
                "manifest_id": manifest,
                "content_key": str(index),
                "content_type": "application/octet-stream",
                "content_encoding": None,
                "content_hash": path.split("/")[1].split(".")[0],
                "content_hash_algorithm": "sha256",
                "content_size": 64,
                "serializer_name": "bench",
                "serializer_config": "{}",
                "serializer_type": SerializerTypeEnum.Serializer,
                "storage_name": "lakery.fsspec@v1",
                "storage_config": json.dumps({"protocol": "file", "root": root, "path": path}),
            }
            for index, path in enumerate(paths)
        ]
        async with engine.begin() as connection:
            for start in range(0, len(rows), 5000):
                await connection.execute(insert(ContentRecord), rows[start : start + 5000])
    finally:
        await engine.dispose()


def _sweep_child(count: int) -> dict[str, Any]:
    """In a fresh process: the lake, the database, then the three runs measured."""
    from benchmarks.rss import PeakRss
    from lakery_fsspec import FsspecStorage, collect_garbage

    with tempfile.TemporaryDirectory(prefix="lakery-gc-bench-") as folder:
        root = Path(folder) / "lake"
        root.mkdir()
        paths = _lake(root, count)
        url = f"sqlite+aiosqlite:///{folder}/labox.db"
        asyncio.run(_database(url, str(root), paths[: count // 2]))
        storage = FsspecStorage(root)
        found: dict[str, Any] = {"objects": count}
        with PeakRss() as rss:
            for name, options in (
                ("dry run", {"dry_run": True}),
                ("quarantine", {}),
                ("delete", {"trash_grace": 0}),
            ):
                started = time.perf_counter()
                result = asyncio.run(collect_garbage(storage, [url], grace=0, **options))
                seconds = time.perf_counter() - started
                moved = result.quarantined.count or result.deleted.count
                found[name] = {
                    "seconds": seconds,
                    "listed": result.listed.count,
                    "moved": moved,
                }
        found["peak_rss_growth_mib"] = rss.growth_mib
        return found


def _sweep_table(sizes: list[int]) -> list[str]:
    lines = [
        "| objects | run | seconds | listed/s | moved or deleted/s | peak RSS growth |",
        "|---|---|---|---|---|---|",
    ]
    for count in sizes:
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.gc", "--child", str(count)],
            capture_output=True,
            text=True,
            check=True,
            timeout=3600,
        )
        found = json.loads(done.stdout.strip().splitlines()[-1])
        for name in ("dry run", "quarantine", "delete"):
            run = found[name]
            moving = run["moved"] and name != "dry run"
            moved = f"{run['moved'] / run['seconds']:,.0f}" if moving else "-"
            lines.append(
                f"| {count:,} | {name} | {run['seconds']:.1f} | "
                f"{run['listed'] / run['seconds']:,.0f} | {moved} | "
                f"{found['peak_rss_growth_mib']:.0f} MiB (whole process) |"
            )
        print(lines[-1], file=sys.stderr)
    return lines


async def _hits(storage: Any, data: bytes, digest: Any, count: int) -> list[float]:
    times: list[float] = []
    for _ in range(count):
        started = time.perf_counter()
        await storage.write_data(data, digest, {})
        times.append(time.perf_counter() - started)
    return times


async def _freshen_cost(url: str, options: dict[str, Any], hits: int) -> tuple[float, float]:
    """Median seconds per dedup hit with the marker, and without it."""
    import lakery_fsspec._storage as storage_module
    from lakery_fsspec import FsspecStorage

    marker = storage_module.freshen

    async def no_marker(*_: Any) -> None:
        return None

    storage = FsspecStorage(url, storage_options=options)
    data = uuid.uuid4().bytes * 64
    digest = {
        "content_hash": hashlib.sha256(data).hexdigest(),
        "content_hash_algorithm": "sha256",
        "content_type": "application/octet-stream",
        "content_encoding": None,
        "content_size": len(data),
    }
    await storage.write_data(data, digest, {})
    with_marker: list[float] = []
    without: list[float] = []
    rounds = 5
    for _ in range(rounds):
        storage_module.freshen = marker
        with_marker += await _hits(storage, data, digest, hits // rounds)
        storage_module.freshen = no_marker  # type: ignore[assignment]
        without += await _hits(storage, data, digest, hits // rounds)
    storage_module.freshen = marker
    return statistics.median(with_marker), statistics.median(without)


def _freshen_table(backends: list[str], hits: int) -> list[str]:
    from benchmarks.envs import running_envs

    lines = [
        "| backend | dedup hit with marker | without | the marker's cost |",
        "|---|---|---|---|",
    ]
    with running_envs(backends) as envs:
        for backend in backends:
            env = envs[backend]
            url = env.url(f"gc-bench-{uuid.uuid4().hex[:8]}")
            on, off = asyncio.run(_freshen_cost(url, env.storage_options, hits))
            lines.append(
                f"| {backend} | {on * 1000:.2f} ms | {off * 1000:.2f} ms | "
                f"{(on - off) * 1000:+.2f} ms (one put) |"
            )
            print(lines[-1], file=sys.stderr)
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, nargs="*", default=list(SIZES))
    parser.add_argument("--backends", default=",".join(BACKENDS))
    parser.add_argument("--hits", type=int, default=200)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(_sweep_child(args.child)))
        return
    lines = _sweep_table(args.objects) if args.objects else []
    backends = [name for name in args.backends.split(",") if name]
    if backends:
        lines += ["", *_freshen_table(backends, args.hits)]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
