"""FsspecStorage, as a user would configure it for each backend."""

from __future__ import annotations

from benchmarks.contenders.base import Contender, Family, LaboxContender
from benchmarks.envs import Env
from lakery_fsspec import FsspecStorage
from lakery_fsspec._backends.local import LocalBackend

__all__ = ["FsspecStorageFamily", "PlainLocalFamily"]


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


class PlainLocalFamily(Family):
    """FsspecStorage on local files with the Linux fast path off (``local_fast``): a named
    temp file and a link for blobs. A fast path stays only while it beats this by at
    least 1.2x on some row."""

    key = "fsspec_storage_plain"
    label = "FsspecStorage, no fast paths"

    @classmethod
    def applies(cls, env: Env) -> bool:
        return env.backend == "local"

    async def open(self, prefix: str) -> Contender:
        storage = FsspecStorage(self.env.url(prefix), chunk_size=self.chunk_size)
        backend = storage._backends_for("file").target  # pyright: ignore[reportPrivateUsage]
        assert isinstance(backend, LocalBackend)
        backend.unnamed_files = False
        return LaboxContender(storage)
