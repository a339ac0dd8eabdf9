"""FsspecStorage, as a user would configure it for each backend."""

from __future__ import annotations

from benchmarks.contenders.base import Contender, Family, LaboxContender
from lakery_fsspec import FsspecStorage

__all__ = ["FsspecStorageFamily"]


class FsspecStorageFamily(Family):
    key = "fsspec_storage"
    label = "FsspecStorage"

    async def open(self, prefix: str) -> Contender:
        storage = FsspecStorage(
            self.env.url(prefix),
            storage_options=self.env.storage_options,
            chunk_size=self.chunk_size,
        )
        return LaboxContender(storage)
