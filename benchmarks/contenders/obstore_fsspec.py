"""FsspecStorage running on obstore's fsspec adapter (``obstore.fsspec.FsspecStore``).

The adapter is registered under the backend's own protocol just long enough for the
storage to build its filesystem; then the previous implementation (s3fs, gcsfs, adlfs,
fsspec's local one) is restored, so the other contenders in this process are unaffected.

FsspecStorage chooses its backend by the filesystem's class: S3's, Azure's, local and
memory backends call their usual clients' internals, so they step aside for the adapter,
and the storage drives it through its obstore backend (the generic one, plus aborting a
failed stream's upload), as it would for any user who registered obstore.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import fsspec
from fsspec.registry import _registry, known_implementations  # pyright: ignore[reportPrivateUsage]
from obstore.fsspec import register

from benchmarks.contenders.base import Contender, Family, LaboxContender
from benchmarks.contenders.obstore_api import GCS_UNAVAILABLE, obstore_config
from benchmarks.envs import FILE_SERVERS, Env
from lakery_fsspec import FsspecStorage

__all__ = ["ObstoreFsspecFamily", "obstore_registered"]


@contextlib.contextmanager
def obstore_registered(protocol: str) -> Iterator[None]:
    """obstore's FsspecStore is fsspec's implementation of ``protocol`` inside this block."""
    previous = _registry.get(protocol)
    register(protocol)
    try:
        yield
    finally:
        if previous is not None:
            fsspec.register_implementation(protocol, previous, clobber=True)
        else:
            _registry.pop(protocol, None)
            assert protocol in known_implementations


class ObstoreFsspecFamily(Family):
    key = "obstore_fsspec"
    label = "FsspecStorage on obstore.fsspec"

    @classmethod
    def applies(cls, env: Env) -> bool:
        return env.backend not in FILE_SERVERS  # obstore speaks object stores and files

    @classmethod
    def unavailable(cls, env: Env) -> str | None:
        return GCS_UNAVAILABLE if env.backend == "gcs" else None

    async def open(self, prefix: str) -> Contender:
        options: dict[str, Any] = obstore_config(self.env)
        with obstore_registered(self.env.protocol):
            storage = FsspecStorage(
                self.env.url(prefix), storage_options=options, chunk_size=self.chunk_size
            )
            # Its first call builds its filesystem and backend, which it keeps: make it
            # while obstore is registered.
            await storage.list_temp()
        return LaboxContender(storage)
