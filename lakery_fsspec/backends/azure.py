"""Azure Blob Storage and Data Lake Gen2, through adlfs and the Azure SDK it wraps."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import re
import uuid
import weakref
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fsspec.asyn import sync

from lakery_fsspec.backends.base import Backend
from lakery_fsspec.backends.body import Body
from lakery_fsspec.backends.clock import Aged, Upload, age, server_time

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec.backends.base import Writer

__all__ = ["AzureBackend"]

_COPY_POLL_SECONDS = 0.2
_RAW_BODY = 2**20
"""The largest request body aiohttp takes as bytes without a warning."""
_PUT_BLOCK = 64 * 2**20
"""Block size of whole-object uploads above ``_RAW_BODY`` (the SDK's single-put limit)."""


class AzureBackend(Backend):
    """Azure: atomic block blob uploads, content settings, raw reads, awaited create-only
    copies.

    Uploads over 1 MiB are staged as blocks here rather than through adlfs and the SDK's
    upload_blob, which hand aiohttp bodies as bytes: above 1 MiB aiohttp warns (an error
    under -W error, where the SDK then fails with "Failed to upload block").
    """

    protocols = ("abfs", "az", "abfss")
    extra = "azure"
    root_kind = "container"
    credentials_hint = (
        "Pass -o connection_string=… or -o account_name=… -o account_key=… (or -o sas_token=…)."
    )
    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 8 * 2**20  # each block is one staged-block request
    min_range_size = 8 * 2**20
    loop_native = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        connection = options.get("connection_string") or os.environ.get(
            "AZURE_STORAGE_CONNECTION_STRING", ""
        )
        match = re.search(r"BlobEndpoint=([^;]+)", str(connection), re.IGNORECASE)
        return match.group(1) if match else None

    @staticmethod
    async def connect(fs: Any) -> None:
        detach_finalizers(fs)  # the storage closes its copies itself

    @staticmethod
    async def disconnect(fs: Any) -> None:
        from adlfs.utils import close_credential, close_service_client

        await close_service_client(fs)
        await close_credential(fs)

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        if len(data) <= _RAW_BODY:  # one request
            await super().put(path, data, digest, **options)
            return
        settings = self.write_options(digest)["content_settings"]
        create = options.get("mode") == "create"

        async def upload(fs: Any) -> None:
            blocks = _Blocks(fs, path)
            view = memoryview(data)
            for start in range(0, len(data), _PUT_BLOCK):
                await blocks.stage(bytes(view[start : start + _PUT_BLOCK]))
            await blocks.commit(settings, create=create)

        await self.io.run(upload)

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        settings = self.write_options(digest)["content_settings"]
        return _BlockWriter(self.fs, path, settings, block_size)

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

    async def list_aged(self, folder: str) -> list[Aged]:
        return await self._walk(folder, False)

    async def list_uploads(self, folder: str) -> list[Upload]:
        # A writer killed mid-stream leaves blocks staged but never committed: no blob,
        # yet kept (and billed) until Azure drops them a week after the last one arrived.
        committed = {path for path, _ in await self._walk(folder, False)}
        return [
            Upload(path, seconds)
            for path, seconds in await self._walk(folder, True)
            if path not in committed
        ]

    async def abort_upload(self, path: str, upload_id: str | None) -> None:
        await self.io.run(lambda fs: _drop_uncommitted(fs, path))

    async def _walk(self, folder: str, uncommitted: bool) -> list[Aged]:
        return await self.io.run(lambda fs: _walk(fs, folder, uncommitted))


async def _walk(fs: Any, folder: str, uncommitted: bool) -> list[Aged]:
    """The blobs directly in ``folder`` (with those that have only uncommitted blocks
    if asked), aged by the server's clock."""
    from azure.core.exceptions import ResourceNotFoundError

    container, prefix, _ = fs.split_path(folder)
    prefix = prefix.rstrip("/") + "/"
    dates: list[str] = []

    def remember_date(response: Any) -> None:
        dates.append(response.http_response.headers.get("Date", ""))

    listed: list[tuple[str, Any]] = []
    async with fs.service_client.get_container_client(container) as client:
        pages = client.walk_blobs(
            name_starts_with=prefix,
            include=["uncommittedblobs"] if uncommitted else None,
            raw_response_hook=remember_date,
        )
        try:
            async for item in pages:
                if getattr(item, "prefix", None) is None:  # not a sub-folder
                    written = item.last_modified or item.creation_time
                    listed.append((f"{container}/{item.name}", written))
        except ResourceNotFoundError as error:
            raise FileNotFoundError(errno.ENOENT, str(error).split("\n")[0], folder) from error
    now = server_time(dates[-1] if dates else None)
    return [Aged(path, age(now, written)) for path, written in listed]


async def _drop_uncommitted(fs: Any, path: str) -> None:
    """Drop the uncommitted blocks of a blob that has no committed ones."""
    from azure.core import MatchConditions
    from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

    container, blob, _ = fs.split_path(path)
    async with fs.service_client.get_blob_client(container, blob) as client:
        try:
            await client.delete_blob()  # Azurite counts such a blob as one
        except ResourceNotFoundError:
            pass
        else:
            return
        # Where the service does not, committing an empty block list drops them (only if
        # no blob was committed meanwhile), and the empty blob made so goes next.
        try:
            made = await client.commit_block_list([], match_condition=MatchConditions.IfMissing)
        except HttpResponseError:  # a blob was committed there: not an upload any more
            return
        with contextlib.suppress(ResourceNotFoundError):
            await client.delete_blob(
                etag=made["etag"], match_condition=MatchConditions.IfNotModified
            )


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


class _Blocks:
    """The staged blocks of one block blob upload, committed at once."""

    def __init__(self, fs: Any, path: str) -> None:
        self._fs = fs
        self._path = path
        self._container, self._blob, _ = fs.split_path(path)
        self._prefix = uuid.uuid4().hex  # ids unique to this writer, all of one length
        self._ids: list[str] = []

    async def stage(self, data: bytes) -> None:
        """Upload one block (uncommitted: invisible until ``commit``)."""
        block_id = f"{self._prefix}{len(self._ids):06d}"
        async with self._fs.service_client.get_blob_client(self._container, self._blob) as client:
            await client.stage_block(block_id, Body(data), length=len(data))
        self._ids.append(block_id)

    async def commit(self, settings: dict[str, Any], *, create: bool = False) -> None:
        """Make the staged blocks the blob; ``create``: FileExistsError if one is there."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError
        from azure.storage.blob import BlobBlock, ContentSettings

        condition = {"match_condition": MatchConditions.IfMissing} if create else {}
        async with self._fs.service_client.get_blob_client(self._container, self._blob) as client:
            try:
                await client.commit_block_list(
                    [BlobBlock(block_id) for block_id in self._ids],
                    content_settings=ContentSettings(**settings),
                    metadata={"is_directory": "false"},  # as adlfs writes it
                    **condition,
                )
            except ResourceExistsError:
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), self._path) from None
        self._fs.invalidate_cache(self._fs._parent(self._path))


class _BlockWriter:
    """A block blob upload fed block by block (blocking: the storage calls it from a
    worker thread; requests run on the filesystem's own loop)."""

    def __init__(self, fs: Any, path: str, settings: dict[str, Any], block_size: int) -> None:
        self._fs = fs
        self._path = path
        self._settings = settings
        self._block_size = block_size
        self._blocks = _Blocks(fs, path)
        self._buffer = bytearray()

    def write(self, data: bytes | memoryview, /) -> None:
        self._buffer += data
        while len(self._buffer) >= self._block_size:
            self._stage(self._block_size)

    def commit(self) -> None:
        if self._buffer:
            self._stage(len(self._buffer))
        sync(self._fs.loop, self._blocks.commit, self._settings)

    def abort(self) -> None:
        # Staged blocks are invisible and expire uncommitted; a committed blob is removed.
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._path)

    def _stage(self, size: int) -> None:
        sync(self._fs.loop, self._blocks.stage, bytes(self._buffer[:size]))
        del self._buffer[:size]


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
