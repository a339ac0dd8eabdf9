"""Local files."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Local files: written to a temp file and renamed, each operation one thread hop."""

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        return await self.io.thread(partial(_create, path, data, temp))

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        file = await self.io.thread(partial(open, path, "rb"))
        try:
            while chunk := await self.io.thread(partial(file.read, chunk_size)):
                yield chunk
        finally:
            file.close()

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        await self.io.thread(partial(_replace, source, destination))


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
