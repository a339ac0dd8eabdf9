"""Stream reads by ranges: chunks of at most ``chunk_size`` cut from ranged reads of at
least ``min_range_size``, the next range requested while the current one is consumed."""

from __future__ import annotations

import random

import fsspec
import pytest
from helpers import CHUNK

from lakery_fsspec._backends.memory import MemoryBackend
from lakery_fsspec._bridge import Bridge


class _CountedRanges(MemoryBackend):
    min_range_size = 3 * CHUNK

    def __init__(self) -> None:
        super().__init__("memory", Bridge(fsspec.filesystem("memory")))
        self.ranges: list[tuple[int | None, int | None]] = []

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        self.ranges.append((start, end))
        return await super().read(path, start, end)


@pytest.mark.parametrize(
    ("size", "chunk_size", "expected"),
    [
        (
            10 * CHUNK + 5,
            CHUNK,
            [
                (0, 3 * CHUNK),
                (3 * CHUNK, 6 * CHUNK),
                (6 * CHUNK, 9 * CHUNK),
                (9 * CHUNK, 10 * CHUNK + 5),
            ],
        ),
        (4 * CHUNK, 4 * CHUNK, [(0, 4 * CHUNK)]),  # chunks above the minimum: one range each
        (0, CHUNK, []),
    ],
)
async def test_chunks_are_cut_from_few_large_ranges(
    size: int, chunk_size: int, expected: list[tuple[int, int]]
) -> None:
    backend = _CountedRanges()
    data = random.Random(size).randbytes(size)
    backend.fs.pipe_file("/ranges/object", data)
    chunks = [chunk async for chunk in backend.iter_chunks("/ranges/object", chunk_size)]
    assert b"".join(chunks) == data
    assert all(0 < len(chunk) <= chunk_size for chunk in chunks)
    assert backend.ranges == expected


async def test_a_reader_that_stops_early_reads_no_further() -> None:
    backend = _CountedRanges()
    backend.fs.pipe_file("/ranges/object", bytes(10 * CHUNK))
    chunks = backend.iter_chunks("/ranges/object", CHUNK)
    assert len(await anext(chunks)) == CHUNK
    await chunks.aclose()
    assert backend.ranges == [(0, 3 * CHUNK), (3 * CHUNK, 6 * CHUNK)]
