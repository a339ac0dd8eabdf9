"""Azure Blob Storage and Data Lake Gen2, through adlfs and the Azure SDK it wraps."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import weakref
from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["AzureBackend"]

_COPY_POLL_SECONDS = 0.2


class AzureBackend(Backend):
    """Azure: atomic block blob uploads, content settings, raw reads, awaited create-only
    copies."""

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 8 * 2**20  # each block is one staged-block request
    min_range_size = 8 * 2**20
    loop_native = True

    @staticmethod
    async def connect(fs: Any) -> None:
        detach_finalizers(fs)  # the storage closes its copies itself

    @staticmethod
    async def disconnect(fs: Any) -> None:
        from adlfs.utils import close_credential, close_service_client

        await close_service_client(fs)
        await close_credential(fs)

    def write_options(self, digest: Digest) -> dict[str, Any]:
        settings = {"content_type": digest["content_type"]}
        if digest["content_encoding"]:
            settings["content_encoding"] = digest["content_encoding"]
        return {"content_settings": settings}

    async def size(self, path: str) -> int | None:
        try:
            return (await self.io.run(lambda fs: _properties(fs, path))).size
        except FileNotFoundError:
            return None

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        # adlfs decodes gzip-encoded blobs (and cannot read ranges of them); the SDK with
        # decompress=False returns the stored bytes.
        return await self.io.run(lambda fs: _download(fs, path, start, end))

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # adlfs's copy only starts the server-side copy; wait for it before deleting.
        created = await self.io.run(lambda fs: _copy_new(fs, source, destination))
        await self.remove(source)
        return created


def detach_finalizers(fs: Any) -> None:
    """Drop the finalizers adlfs registers on an ``asynchronous=True`` instance: they
    close its client through ``fs.loop``, which such an instance lacks (so they fail at
    exit with "Loop is not running"), and they keep the instance alive for good."""
    registry: dict[weakref.finalize[..., Any], Any] = getattr(weakref.finalize, "_registry", {})
    for finalizer in list(registry):
        if (alive := finalizer.peek()) is not None and alive[0] is fs:
            finalizer.detach()


async def _properties(fs: Any, path: str) -> Any:
    from azure.core.exceptions import ResourceNotFoundError

    container, blob, _ = fs.split_path(path)
    async with fs.service_client.get_blob_client(container, blob) as client:
        try:
            return await client.get_blob_properties()
        except ResourceNotFoundError:
            raise _not_found(path) from None


async def _download(fs: Any, path: str, start: int | None, end: int | None) -> bytes:
    from azure.core.exceptions import ResourceNotFoundError

    offset = None if start is None and end is None else start or 0
    length = None if end is None or offset is None else end - offset
    if length is not None and length <= 0:
        return b""
    container, blob, version_id = fs.split_path(path)
    async with fs.service_client.get_blob_client(container, blob) as client:
        try:
            stream = await client.download_blob(
                offset=offset,
                length=length,
                version_id=version_id,
                decompress=False,
                max_concurrency=fs.max_concurrency or 1,
            )
        except ResourceNotFoundError:
            raise _not_found(path) from None
        return await stream.readall()


async def _copy_new(fs: Any, source: str, destination: str) -> bool:
    """Copy a blob server-side unless one is at ``destination`` (``If-None-Match: *``,
    refused in the same request); whether it was copied. Returns once the copy is done."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceNotFoundError

    service = fs.service_client
    async with (
        service.get_blob_client(*fs.split_path(source)[:2]) as source_client,
        service.get_blob_client(*fs.split_path(destination)[:2]) as client,
    ):
        try:
            copy = await client.start_copy_from_url(
                source_client.url, match_condition=MatchConditions.IfMissing
            )
        except ResourceNotFoundError:
            raise _not_found(source) from None
        except ResourceExistsError:  # 409 BlobAlreadyExists
            await _settled(client, destination)  # another writer's copy may be in flight
            return False
        status = copy["copy_status"]
        try:
            while status == "pending":
                await asyncio.sleep(_COPY_POLL_SECONDS)
                status = (await client.get_blob_properties()).copy.status
            if status != "success":
                msg = f"Azure copy {source} -> {destination} ended with status {status!r}"
                raise OSError(msg)
        except BaseException:
            # Never leave a half-copied blob at the final path, but delete it only
            # while it is still our aborted copy, never another writer's object.
            with contextlib.suppress(Exception):
                await client.abort_copy(copy["copy_id"])
            with contextlib.suppress(Exception):
                if (await client.get_blob_properties()).copy.id == copy["copy_id"]:
                    await client.delete_blob()
            raise
    fs.invalidate_cache(fs._parent(destination))
    return True


async def _settled(client: Any, path: str) -> None:
    """Wait while the blob at ``path`` is still being copied in (by another writer);
    OSError if that copy failed, since then the blob is not the content."""
    status = (await client.get_blob_properties()).copy.status
    while status == "pending":
        await asyncio.sleep(_COPY_POLL_SECONDS)
        status = (await client.get_blob_properties()).copy.status
    if status not in (None, "success"):
        msg = f"Azure blob {path} exists, but its copy from another writer ended {status!r}"
        raise OSError(msg)


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
