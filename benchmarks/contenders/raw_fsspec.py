"""Raw fsspec doing FsspecStorage's work by hand: the floor of FsspecStorage's overhead.

Async filesystems (s3fs, gcsfs, adlfs) are driven natively on the caller's loop through an
``asynchronous=True`` instance; blocking ones (local, memory) run in worker threads.
Blobs: one put / one get. Streams: a sync file in a worker thread to a temp path, then
``mv`` to the content-addressed path; reads in ``chunk_size`` ranges, or through s3fs's
async file for s3fs (one streamed GET).
"""

from __future__ import annotations

import asyncio
import contextlib
import posixpath
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import fsspec
from fsspec.asyn import AsyncFileSystem
from labox.core.storage import Digest

from benchmarks.contenders.base import Contender, Family
from benchmarks.workload import MiB, Stream
from lakery_fsspec._backends.azure import detach_finalizers

__all__ = ["RawFsspecFamily", "block_size", "close_async_fs", "sftp_options"]

T = TypeVar("T")


def block_size(protocol: str, chunk_size: int) -> int:
    """The upload block size FsspecStorage picks (s3fs needs >= 5 MiB parts; gcs and
    azure blocks are one request each, so at least 8 MiB)."""
    if protocol == "s3":
        return max(chunk_size, 5 * MiB)
    if protocol in ("gs", "gcs", "abfs", "az"):
        return -(-max(chunk_size, 8 * MiB) // (256 * 2**10)) * 256 * 2**10
    return chunk_size


class RawFsspecFamily(Family):
    key = "raw_fsspec"
    label = "raw fsspec"

    async def open(self, prefix: str) -> Contender:
        if not hasattr(self, "sync_fs"):
            options = dict(self.env.storage_options)
            if self.env.protocol == "sftp":
                options = sftp_options(self.env.url(""), options)
            if isinstance(options.get("auth"), list):  # webdav4 (httpx) wants a tuple
                options["auth"] = tuple(options["auth"])
            self.sync_fs = fsspec.filesystem(self.env.protocol, **options)
            self.async_fs: AsyncFileSystem | None = None
            # sshfs connects in its constructor, on fsspec's loop: its sync API it is.
            if self.sync_fs.async_impl and self.env.backend != "sshfs":
                self.async_fs = fsspec.filesystem(
                    self.env.protocol,
                    asynchronous=True,
                    skip_instance_cache=True,
                    **self.env.storage_options,
                )
                set_session = getattr(self.async_fs, "set_session", None)
                if set_session is not None:
                    await set_session()
        root = self.sync_fs._strip_protocol(self.env.url(prefix))
        return RawFsspec(self.sync_fs, self.async_fs, root, self.env.protocol, self.chunk_size)

    async def aclose(self) -> None:
        if getattr(self, "async_fs", None) is not None:
            await close_async_fs(self.async_fs)


def sftp_options(url: str, options: dict[str, Any]) -> dict[str, Any]:
    """paramiko's options for an SFTP URL: host, port and user from it; no known_hosts
    (FsspecStorage's option): fsspec's own client accepts the key, as shipped."""
    cls = fsspec.get_filesystem_class("sftp")
    options = {**cls._get_kwargs_from_urls(url), **options}
    options.pop("known_hosts", None)
    return options


def _sftp_tuned(fs: Any) -> threading.Lock:
    """Raw paramiko used correctly: its one channel serves one call at a time (two at once
    hang or corrupt it), and Nagle off (as FsspecStorage does), so that the baseline is
    the client's best, not its 0.7 MB/s default."""
    transport = fs.client.get_transport()
    transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return threading.Lock()


async def close_async_fs(fs: Any) -> None:
    """Close the HTTP session of an ``asynchronous=True`` s3fs, gcsfs or adlfs instance."""
    if (s3 := getattr(fs, "_s3", None)) is not None:
        await s3.__aexit__(None, None, None)
    elif (session := getattr(fs, "_session", None)) is not None:
        await session.close()
    elif (client := getattr(fs, "service_client", None)) is not None:
        await client.close()
        detach_finalizers(fs)  # closed: adlfs's own would fail at exit


class RawFsspec(Contender):
    def __init__(
        self,
        sync_fs: fsspec.AbstractFileSystem,
        async_fs: AsyncFileSystem | None,
        root: str,
        protocol: str,
        chunk_size: int,
    ) -> None:
        self.fs = sync_fs
        self.afs = async_fs
        self.root = root
        self.local = protocol == "file"
        # ftplib, both SFTP clients and webdav4 make no folders when a file is opened for
        # writing.
        self.needs_dirs = protocol in ("file", "ftp", "sftp", "webdav")
        self.chunk_size = chunk_size
        self.block_size = block_size(protocol, chunk_size)
        # ftplib has one control connection and paramiko one channel: calls on either from
        # several threads at once break it, so theirs are made one at a time (the only
        # correct use of one instance).
        if protocol == "sftp":
            self.serial: Any = _sftp_tuned(sync_fs)
        else:
            self.serial = threading.Lock() if protocol == "ftp" else contextlib.nullcontext()
        if self.needs_dirs:
            self.fs.makedirs(root, exist_ok=True)
        if protocol == "webdav":  # webdav4's files upload into an existing folder only
            self.fs.makedirs(f"{root}/tmp", exist_ok=True)

    async def _sync(self, function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        def call() -> T:
            with self.serial:
                return function(*args, **kwargs)

        return await asyncio.to_thread(call)

    def _path(self, name: str) -> str:
        return f"{self.root}/{name}"

    async def write_blob(self, data: bytes, digest: Digest) -> str:
        path = self._path(digest["content_hash"])
        if self.afs is not None:
            await self.afs._pipe_file(path, data)
        else:
            await self._sync(self.fs.pipe_file, path, data)
        return path

    async def read_blob(self, handle: str) -> bytes:
        if self.afs is not None:
            return await self.afs._cat_file(handle)
        return await self._sync(self.fs.cat_file, handle)

    async def write_stream(self, stream: Stream) -> str:
        temp = self._path(f"tmp/{uuid.uuid4().hex}")
        if self.needs_dirs:
            await self._sync(self.fs.makedirs, posixpath.dirname(temp), exist_ok=True)
        file: Any = await self._sync(self.fs.open, temp, "wb", block_size=self.block_size)
        async for chunk in stream:
            await self._sync(file.write, chunk)
        await self._sync(file.close)
        final = self._path(stream.get_digest()["content_hash"])
        await self._sync(self.fs.mv, temp, final)
        return final

    async def read_stream(self, handle: str) -> AsyncIterator[bytes]:
        if self.afs is None:
            file: Any = await self._sync(self.fs.open, handle, "rb")
            try:
                while chunk := await self._sync(file.read, self.chunk_size):
                    yield chunk
            finally:
                await self._sync(file.close)
            return
        if type(self.afs).__name__ == "S3FileSystem":
            # s3fs: one streamed GET through its async file, as FsspecStorage's S3 backend
            # does; ranged GETs cost moto O(object size) each (see RESULTS.md). gcsfs's
            # open_async raises NotImplementedError; adlfs has none.
            file = await self.afs.open_async(handle, "rb")
            try:
                while chunk := await _read_up_to(file, self.chunk_size):
                    yield chunk
            finally:
                await file.close()
            return
        size = int((await self.afs._info(handle))["size"])
        for start in range(0, size, self.chunk_size):
            end = min(start + self.chunk_size, size)
            yield await self.afs._cat_file(handle, start=start, end=end)


async def _read_up_to(file: Any, size: int) -> bytes:
    """``size`` bytes from an async file (fewer only at its end)."""
    parts: list[bytes] = []
    missing = size
    while missing and (part := await file.read(missing)):
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)
