"""Local files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, BinaryIO

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["LocalBackend"]

_BYTES_PER_HOP = 8 * 2**20
"""What local streams move per worker-thread hop, reading (whole chunks, at least one)
and writing (the upload block): from page cache a hop costs as much as a 1 MiB chunk."""
_INLINE_READ = 64 * 2**10
"""Whole files up to this size are read on the caller's loop, in less time than a hop to
a worker thread takes (unless calls have a timeout, which only threads can honour)."""


class LocalBackend(Backend):
    """Local files: written to a temp file and renamed, each operation one thread hop
    (small whole-file reads none)."""

    min_block_size = _BYTES_PER_HOP

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None and end is None and self.io.timeout is None:
            small = _read_if_small(path)  # blocks the loop, for microseconds
            if small is not None:
                return small
        return await super().read(path, start, end)

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        return await self.io.thread(partial(_create, path, data, temp))

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        opened: list[BinaryIO] = []  # filled in the worker thread, closed here in any case
        per_hop = max(1, _BYTES_PER_HOP // chunk_size)

        def read() -> list[bytes]:
            if not opened:
                opened.append(open(path, "rb"))  # noqa: SIM115 (closed below)
            chunks: list[bytes] = []
            while len(chunks) < per_hop and (chunk := opened[0].read(chunk_size)):
                chunks.append(chunk)
            return chunks

        try:
            while chunks := await self.io.thread(read):
                for chunk in chunks:
                    yield chunk
        finally:
            for file in opened:
                file.close()

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        await self.io.thread(partial(_replace, source, destination))


def _read_if_small(path: str) -> bytes | None:
    """The file's bytes if it has at most ``_INLINE_READ`` of them, else None."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size <= _INLINE_READ:
            return file.read()
    return None


def _create(path: str, data: bytes, temp: str) -> bool:
    if os.path.exists(path):
        return False
    try:
        _write(temp, data)
        _replace(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise
    return True


def _write(path: str, data: bytes) -> None:
    try:
        with open(path, "wb") as file:
            file.write(data)
    except FileNotFoundError:  # the first write under this folder: make it once
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as file:
            file.write(data)


def _replace(source: str, destination: str) -> None:
    # os.replace is one atomic rename on the same filesystem (the temp folder is inside
    # the root), where fsspec's mv may fall back to copying.
    try:
        os.replace(source, destination)
    except FileNotFoundError:
        if not os.path.exists(source):
            raise
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        os.replace(source, destination)
