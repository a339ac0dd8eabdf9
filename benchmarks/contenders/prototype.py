"""Prototype levers for FsspecStorage, measured next to it (the real change belongs in
lakery_fsspec/; nothing here is used by the package).

- ``prototype``: FsspecStorage whose ``write_data``
  - on s3/gcs/azure sends ONE conditional-create put (``mode="create"``: If-None-Match on
    S3, ifGenerationMatch=0 on GCS, overwrite=False on Azure) and treats FileExistsError
    as "already there", instead of an existence check followed by a put;
  - on local files does the whole temp-write + rename in ONE worker-thread call, instead
    of one thread hop per step (exists, makedirs, write, makedirs, replace).
- ``raw_bridge``: raw fsspec's calls sent through the package's `Bridge` (fsspec's IO
  loop thread) instead of a caller-loop async instance: the floor of the current design.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
from functools import partial
from typing import Any

from labox.common.types import TagMap
from labox.core.storage import Digest

from benchmarks.contenders.base import Contender, Family, LaboxContender
from benchmarks.contenders.raw_fsspec import RawFsspec, RawFsspecFamily
from lakery_fsspec import FsspecStorage
from lakery_fsspec.bridge import Bridge
from lakery_fsspec.pointer import FsspecPointer
from lakery_fsspec.router import route

__all__ = ["PrototypeFamily", "RawBridgeFamily"]

_CONDITIONAL = ("s3", "gcs", "abfs")


class PrototypeStorage(FsspecStorage):
    """FsspecStorage with one request (or one thread hop) per whole-object write."""

    async def write_data(self, data: bytes, digest: Digest, tags: TagMap, /) -> FsspecPointer:
        protocol = self.location.protocol
        if protocol not in (*_CONDITIONAL, "file"):
            return await super().write_data(data, digest, tags)
        path = route(self._writable_router(), digest, tags)
        backend = self._backends_for(protocol)[1]  # pyright: ignore[reportPrivateUsage]
        final = self._join(self.location.root, path)  # pyright: ignore[reportPrivateUsage]
        if protocol == "file":
            temp = self._temp_path()  # pyright: ignore[reportPrivateUsage]
            await backend.io.thread(partial(_local_write, final, temp, data))
        else:
            options: dict[str, Any] = backend.write_options(digest)
            with contextlib.suppress(FileExistsError):
                await backend.io.call("pipe_file", final, data, mode="create", **options)
        return self._pointer(path, digest)  # pyright: ignore[reportPrivateUsage]


def _local_write(final: str, temp: str, data: bytes) -> None:
    """Write ``data`` at ``final`` through ``temp`` and a rename, unless ``final`` exists."""
    if os.path.exists(final):
        return
    os.makedirs(posixpath.dirname(temp), exist_ok=True)
    try:
        with open(temp, "wb") as file:
            file.write(data)
        os.makedirs(posixpath.dirname(final), exist_ok=True)
        os.replace(temp, final)
    except BaseException:
        if os.path.exists(temp):
            os.remove(temp)
        raise


class PrototypeFamily(Family):
    key = "prototype"
    label = "prototype"

    async def open(self, prefix: str) -> Contender:
        storage = PrototypeStorage(
            self.env.url(prefix),
            storage_options=self.env.storage_options,
            chunk_size=self.chunk_size,
        )
        return LaboxContender(storage)


class RawBridge(RawFsspec):
    """Raw fsspec, with every async call made on fsspec's IO loop through `Bridge`."""

    def __init__(self, bridge: Bridge, *args: Any) -> None:
        super().__init__(*args)
        self.bridge = bridge

    async def write_blob(self, data: bytes, digest: Digest) -> str:
        path = self._path(digest["content_hash"])
        await self.bridge.call("pipe_file", path, data)
        return path

    async def read_blob(self, handle: str) -> bytes:
        return await self.bridge.call("cat_file", handle)


class RawBridgeFamily(RawFsspecFamily):
    key = "raw_bridge"
    label = "raw fsspec via Bridge"

    async def open(self, prefix: str) -> Contender:
        raw = await super().open(prefix)
        assert isinstance(raw, RawFsspec)
        return RawBridge(
            Bridge(raw.fs), raw.fs, raw.afs, raw.root, self.env.protocol, raw.chunk_size
        )
