"""Timed operations in this process: small objects, blobs and streams."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from labox.core.storage import Digest

from benchmarks.contenders import Contender
from benchmarks.workload import StreamSource

__all__ = ["consume", "read_many", "write_many"]


async def _bounded(concurrency: int, jobs: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    gate = asyncio.Semaphore(concurrency)

    async def one(job: Callable[[], Awaitable[Any]]) -> Any:
        async with gate:
            return await job()

    return await asyncio.gather(*(one(job) for job in jobs))


async def write_many(
    contender: Contender, objects: list[tuple[bytes, Digest]], concurrency: int
) -> list[Any]:
    jobs = [lambda d=data, g=digest: contender.write_blob(d, g) for data, digest in objects]
    return await _bounded(concurrency, jobs)


async def read_many(contender: Contender, handles: list[Any], concurrency: int, size: int) -> None:
    jobs = [lambda h=handle: contender.read_blob(h) for handle in handles]
    for data in await _bounded(concurrency, jobs):
        if len(data) != size:
            raise AssertionError(f"read {len(data)} bytes, expected {size}")


async def consume(contender: Contender, handle: Any, stream: StreamSource) -> None:
    """Read a stream to its end, checking the total."""
    total = 0
    async for chunk in contender.read_stream(handle):
        total += len(chunk)
    if total != stream.size:
        raise AssertionError(f"read {total} bytes, expected {stream.size}")
