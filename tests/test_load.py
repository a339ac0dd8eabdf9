"""Load: 2,000 writes of identical and distinct contents from 64 concurrent tasks.

Every content ends as exactly one intact object, every write of one content returns the
same pointer, and no temp object is left behind.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload

from lakery_fsspec import FsspecStorage

WRITES = 2_000
DISTINCT = 200
TASKS = 64


@pytest.mark.backends("s3", "gcs", "azure", "ftp", "webdav")
async def test_concurrent_writes_of_identical_and_distinct_contents(
    backend: BackendInfo, root_url: str
) -> None:
    storage = FsspecStorage(
        root_url, storage_options=backend.storage_options, chunk_size=2**20, timeout=60
    )
    contents = [payload(64 + 37 * i % 3000, seed=i) for i in range(DISTINCT)]
    # Each content is written WRITES / DISTINCT times, the copies spread over the run.
    order = [i % DISTINCT for i in range(WRITES)]
    random.Random(42).shuffle(order)
    jobs: asyncio.Queue[tuple[int, int]] = asyncio.Queue()
    for position, index in enumerate(order):
        jobs.put_nowait((position, index))
    pointers: dict[int, list[Any]] = defaultdict(list)

    async def worker() -> None:
        while not jobs.empty():
            position, index = jobs.get_nowait()
            data = contents[index]
            if position % 10 == 0:  # a tenth of the writes stream through a temp object
                stream = Stream(chunked(data, 1000))
                pointer = await storage.write_data_stream(stream, stream.get_digest, {})
            else:
                pointer = await storage.write_data(data, digest_of(data), {})
            pointers[index].append(pointer)

    await asyncio.gather(*(worker() for _ in range(TASKS)))

    assert sum(map(len, pointers.values())) == WRITES
    assert all(len({str(p) for p in found}) == 1 for found in pointers.values())
    unique = {index: found[0] for index, found in pointers.items()}
    assert len(unique) == DISTINCT

    async def check(index: int) -> None:
        pointer = unique[index]
        if index % 2:
            assert await storage.read_data(pointer) == contents[index]
        else:
            chunks = [chunk async for chunk in storage.read_data_stream(pointer)]
            assert b"".join(chunks) == contents[index]

    semaphore = asyncio.Semaphore(TASKS)

    async def bounded(index: int) -> None:
        async with semaphore:
            await check(index)

    await asyncio.gather(*(bounded(index) for index in unique))

    fs = backend.fs()
    root = fs._strip_protocol(root_url).rstrip("/")
    stored = sorted(
        path[len(root) + 1 :] for path in fs.find(root) if "/.lakery-fresh/" not in path
    )
    assert stored == sorted(pointer["path"] for pointer in unique.values())
    assert await storage.list_temp() == []
