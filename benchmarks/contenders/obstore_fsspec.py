"""FsspecStorage running on obstore's fsspec adapter (``obstore.fsspec.FsspecStore``).

The adapter is registered under the backend's own protocol just long enough for the
storage to build its filesystem; then the previous implementation (s3fs, gcsfs, adlfs,
fsspec's local one) is restored, so the other contenders in this process are unaffected.

FsspecStorage picks its per-backend behaviour by protocol, and its S3/Azure/local/memory
backends call s3fs/adlfs/local/memory internals (``split_path``, ``fs.store``, …) that the
adapter lacks. So this contender installs the generic `Backend` (plain fsspec calls) for
the adapter: what the package would do if it chose backends by filesystem class.
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
from benchmarks.envs import Env
from lakery_fsspec import FsspecStorage
from lakery_fsspec.backends import Backend
from lakery_fsspec.bridge import Bridge
from lakery_fsspec.storage import _Backends  # pyright: ignore[reportPrivateUsage]

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
    def unavailable(cls, env: Env) -> str | None:
        return GCS_UNAVAILABLE if env.backend == "gcs" else None

    async def open(self, prefix: str) -> Contender:
        options: dict[str, Any] = obstore_config(self.env)
        with obstore_registered(self.env.protocol):
            storage = FsspecStorage(
                self.env.url(prefix), storage_options=options, chunk_size=self.chunk_size
            )
            _, fs = storage.location.filesystems()  # build it now, while obstore is registered
        protocol = storage.location.protocol
        generic = Backend(protocol, Bridge(fs))
        backends = storage._process.backends  # pyright: ignore[reportPrivateUsage]
        backends[protocol] = _Backends(generic, generic)
        return LaboxContender(storage)
