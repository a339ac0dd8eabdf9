"""The physical limit for local files: plain sequential writes and reads of the same bytes.

Blocking calls straight on the event loop (deliberately: no thread hand-off), one file at
a time, no temp file or rename: what the disk and page cache give a single Python thread.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

from labox.core.storage import Digest

from benchmarks.contenders.base import Contender, Family
from benchmarks.envs import Env
from benchmarks.workload import Stream

__all__ = ["PhysicalFamily"]


class PhysicalFamily(Family):
    key = "physical"
    label = "physical limit"

    @classmethod
    def applies(cls, env: Env) -> bool:
        return env.backend == "local"

    async def open(self, prefix: str) -> Contender:
        folder = Path(self.env.root) / prefix
        folder.mkdir(parents=True, exist_ok=True)
        return PlainFiles(folder, self.chunk_size)


class PlainFiles(Contender):
    def __init__(self, folder: Path, chunk_size: int) -> None:
        self.folder = folder
        self.chunk_size = chunk_size

    async def write_blob(self, data: bytes, digest: Digest) -> str:
        path = self.folder / digest["content_hash"]
        with path.open("wb") as file:
            file.write(data)
        return str(path)

    async def read_blob(self, handle: str) -> bytes:
        with open(handle, "rb") as file:  # noqa: ASYNC230
            return file.read()

    async def write_stream(self, stream: Stream) -> str:
        path = self.folder / stream.source.digest["content_hash"]
        with path.open("wb") as file:
            for chunk in stream.source.chunks():
                file.write(chunk)
        return str(path)

    async def read_stream(self, handle: str) -> AsyncIterator[bytes]:
        with open(handle, "rb") as file:  # noqa: ASYNC230
            while chunk := file.read(self.chunk_size):
                yield chunk
