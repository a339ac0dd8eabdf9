"""What every contender does: the labox Storage API's four operations, on one prefix."""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator
from typing import Any, ClassVar

import fsspec
from labox.core.storage import Digest, Storage

from benchmarks.envs import Env
from benchmarks.workload import Stream

__all__ = ["Contender", "Family", "LaboxContender", "cleanup_fs"]

Handle = Any
"""What a write returns and a read takes: a labox pointer, a path, …; JSON-able."""


class Contender(ABC):
    """One way of storing objects under one prefix of one backend."""

    @abstractmethod
    async def write_blob(self, data: bytes, digest: Digest) -> Handle: ...

    @abstractmethod
    async def read_blob(self, handle: Handle) -> Any:
        """The object's bytes (or a buffer of them, for APIs that return one)."""

    @abstractmethod
    async def write_stream(self, stream: Stream) -> Handle: ...

    @abstractmethod
    def read_stream(self, handle: Handle) -> AsyncIterator[Any]: ...


class LaboxContender(Contender):
    """A labox storage driven through the Storage API, as labox itself calls it."""

    def __init__(self, storage: Storage[Any]) -> None:
        self.storage = storage

    async def write_blob(self, data: bytes, digest: Digest) -> Handle:
        return await self.storage.write_data(data, digest, {})

    async def read_blob(self, handle: Handle) -> bytes:
        return await self.storage.read_data(handle)

    async def write_stream(self, stream: Stream) -> Handle:
        return await self.storage.write_data_stream(stream, stream.get_digest, {})

    async def read_stream(self, handle: Handle) -> AsyncIterator[bytes]:
        async for chunk in self.storage.read_data_stream(handle):
            yield chunk


class Family(ABC):
    """A kind of contender on one backend; it may share clients between prefixes.

    ``open`` and ``aclose`` run on the event loop that drives the measurements.
    """

    key: ClassVar[str]
    label: ClassVar[str]

    def __init__(self, env: Env, chunk_size: int) -> None:
        self.env = env
        self.chunk_size = chunk_size

    @classmethod
    def applies(cls, env: Env) -> bool:
        """Whether this family has a column for ``env`` at all."""
        return True

    @classmethod
    def unavailable(cls, env: Env) -> str | None:
        """Why this family cannot be pointed at ``env`` (None if it can)."""
        return None

    @abstractmethod
    async def open(self, prefix: str) -> Contender: ...

    async def cleanup(self, prefix: str) -> None:
        """Delete what was written under ``prefix`` (not timed)."""
        await asyncio.to_thread(cleanup_fs, self.env, prefix)

    async def aclose(self) -> None:
        return None


def cleanup_fs(env: Env, prefix: str) -> None:
    """Remove ``prefix`` and everything under it, through a fresh sync fsspec instance."""
    if env.protocol == "memory":
        fs = fsspec.filesystem("memory")
    else:
        options = dict(env.storage_options)
        options.pop("known_hosts", None)  # FsspecStorage's SFTP option, not paramiko's
        fs = fsspec.filesystem(env.protocol, skip_instance_cache=True, **options)
    url = env.url(prefix)
    with contextlib.suppress(FileNotFoundError):
        fs.rm(url, recursive=True)
