"""Azure Blob Storage and Data Lake Gen2, through adlfs and the Azure SDK it wraps."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import io
import os
import uuid
import weakref
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend, Writer
from lakery_fsspec.backends.blocks import BlockWriter, upload_whole
from lakery_fsspec.checksums import b64, computed
from lakery_fsspec.errors import IntegrityError, exception_chain

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["AzureBackend"]

_COPY_POLL_SECONDS = 0.2
_MAX_SINGLE_PUT = 64 * 2**20
"""The Azure SDK's default ``max_single_put_size``: larger uploads it splits into blocks,
which a whole-blob Content-MD5 would not match."""
_CHECKSUM_MISMATCH = frozenset({"Md5Mismatch", "Crc64Mismatch"})


class AzureBackend(Backend):
    """Azure: atomic block blob uploads, content settings, raw reads, awaited copies.

    Every upload request carries its body's MD5 (``Content-MD5``), which Azure verifies
    before it stores anything: a put the blob's, a stream each block's (see AzureWriter).
    """

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
        return _write_options(digest)

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        exclusive = options.pop("mode", "overwrite") == "create"
        if len(data) > _MAX_SINGLE_PUT:
            if exclusive and await self.exists(path):
                # Refused before any block is staged (a race still loses them at the
                # commit: Azure drops uncommitted blocks after a week).
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            writer = AzureWriter(self.fs, path, self.min_block_size, digest, exclusive)
            await upload_whole(self.io, writer, data, f"{self.protocol}://{path}")
            return
        md5 = await computed(self.io, _md5, data)
        with _mismatch_is_integrity_error(path):
            await self.io.run(
                lambda fs: _put_blob(fs, path, data, md5, self.write_options(digest), exclusive)
            )

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return AzureWriter(self.fs, path, block_size, digest)

    async def size(self, path: str) -> int | None:
        try:
            return (await self.io.run(lambda fs: _properties(fs, path))).size
        except FileNotFoundError:
            return None

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        # adlfs decodes gzip-encoded blobs (and cannot read ranges of them); the SDK with
        # decompress=False returns the stored bytes.
        return await self.io.run(lambda fs: _download(fs, path, start, end))

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        # adlfs's copy only starts the server-side copy; wait for it before deleting.
        await self.io.run(lambda fs: _copy(fs, source, destination))
        await self.remove(source)


class AzureWriter(BlockWriter):
    """Blocks staged with their MD5 (``Content-MD5``, verified by Azure for each block),
    then committed as one block list with the content settings; a stream shorter than
    one block is a single Put Blob with its MD5. ``abort`` drops the staged blocks (by
    committing an empty list and deleting that empty blob), so none stay behind. With
    ``exclusive``, the commit refuses to overwrite an existing blob (FileExistsError).
    """

    def __init__(
        self, fs: Any, path: str, block_size: int, digest: Digest, exclusive: bool = False
    ) -> None:
        super().__init__(fs, block_size)
        self._path = path
        self._settings = _write_options(digest)
        self._exclusive = exclusive
        self._blocks: list[str] = []
        self._committed = False

    def _send_block(self, block: bytes) -> None:
        block_id = uuid.uuid4().hex
        self._blocks.append(block_id)
        self._start(_stage_block, self._fs, self._path, block_id, block, _md5(block))

    def _finish(self, last: bytes) -> None:
        if not self._blocks:
            with _mismatch_is_integrity_error(self._path):
                self._run(
                    _put_blob,
                    self._fs,
                    self._path,
                    last,
                    _md5(last),
                    self._settings,
                    self._exclusive,
                )
            self._committed = True
            return
        if last:
            self._send_block(last)
        self._run(_commit, self._fs, self._path, self._blocks, self._settings, self._exclusive)
        self._committed = True

    def _discard(self) -> None:
        if self._blocks and not self._committed:
            self._blocks = []
            self._run(_discard_blocks, self._fs, self._path, self._exclusive)


def _write_options(digest: Digest) -> dict[str, Any]:
    """The content settings for the digest's content type and encoding."""
    settings = {"content_type": digest["content_type"]}
    if digest["content_encoding"]:
        settings["content_encoding"] = digest["content_encoding"]
    return {"content_settings": settings}


def _md5(data: bytes) -> bytes:
    return hashlib.md5(data).digest()


async def _put_blob(
    fs: Any, path: str, data: bytes, md5: bytes, options: dict[str, Any], exclusive: bool
) -> None:
    """One Put Blob carrying its MD5; FileExistsError if ``exclusive`` and a blob exists."""
    await fs._pipe_file(
        path,
        data,
        mode="create" if exclusive else "overwrite",
        headers={"Content-MD5": b64(md5)},
        **options,
    )


async def _stage_block(fs: Any, path: str, block_id: str, block: bytes, md5: bytes) -> None:
    container, blob, _ = fs.split_path(path)
    async with fs.service_client.get_blob_client(container, blob) as client:
        with _mismatch_is_integrity_error(path):
            # A stream, not bytes: aiohttp warns about large raw-bytes bodies.
            await client.stage_block(
                block_id, io.BytesIO(block), length=len(block), headers={"Content-MD5": b64(md5)}
            )


async def _commit(
    fs: Any, path: str, blocks: list[str], options: dict[str, Any], exclusive: bool
) -> None:
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
    from azure.storage.blob import BlobBlock, ContentSettings

    container, blob, _ = fs.split_path(path)
    condition = {"headers": {"If-None-Match": "*"}} if exclusive else {}
    async with fs.service_client.get_blob_client(container, blob) as client:
        try:
            await client.commit_block_list(
                [BlobBlock(block_id) for block_id in blocks],
                content_settings=ContentSettings(**options["content_settings"]),
                metadata={"is_directory": "false"},
                **condition,
            )
        except (ResourceExistsError, ResourceModifiedError):  # 409 or 412: a blob exists
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path) from None
    fs.invalidate_cache(fs._parent(path))


async def _discard_blocks(fs: Any, path: str, exclusive: bool) -> None:
    """Drop a blob's uncommitted blocks: committing a list drops every block not in it,
    so commit none, then delete the empty blob that made. With ``exclusive`` (the blob
    is a final object), never over an existing blob: its blocks then expire by
    themselves (Azure drops uncommitted blocks after a week)."""
    from azure.core import MatchConditions
    from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

    container, blob, _ = fs.split_path(path)
    condition = {"headers": {"If-None-Match": "*"}} if exclusive else {}
    async with fs.service_client.get_blob_client(container, blob) as client:
        try:
            empty = await client.commit_block_list([], **condition)
        except (ResourceExistsError, ResourceModifiedError):
            return
        await client.delete_blob(etag=empty["etag"], match_condition=MatchConditions.IfNotModified)


@contextlib.contextmanager
def _mismatch_is_integrity_error(path: str) -> Generator[None]:
    """Raise IntegrityError where Azure refused a body that does not match its MD5."""
    try:
        yield
    except Exception as error:
        if any(_is_mismatch(item) for item in exception_chain(error)):
            msg = (
                f"Upload to abfs://{path} failed: checksum mismatch. Azure refused the body "
                "because it does not match the MD5 sent with it (damaged in transit); "
                "nothing was stored."
            )
            raise IntegrityError(msg) from error
        raise


def _is_mismatch(error: BaseException) -> bool:
    """Whether an Azure error says the body does not match the checksum sent with it
    (Azure: error code Md5Mismatch; Azurite: InvalidOperation "Provided contentMD5
    doesn't match.")."""
    if getattr(error, "error_code", None) in _CHECKSUM_MISMATCH:
        return True
    message = str(getattr(error, "message", "")).lower()
    return getattr(error, "status_code", None) == 400 and "md5" in message and "match" in message


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


async def _copy(fs: Any, source: str, destination: str) -> None:
    from azure.core.exceptions import ResourceNotFoundError

    service = fs.service_client
    async with (
        service.get_blob_client(*fs.split_path(source)[:2]) as source_client,
        service.get_blob_client(*fs.split_path(destination)[:2]) as client,
    ):
        try:
            copy = await client.start_copy_from_url(source_client.url)
        except ResourceNotFoundError:
            raise _not_found(source) from None
        status = copy["copy_status"]
        try:
            while status == "pending":
                await asyncio.sleep(_COPY_POLL_SECONDS)
                status = (await client.get_blob_properties()).copy.status
        except BaseException:
            # Never leave a half-copied blob at the final path, but delete it only
            # while it is still our aborted copy, never another writer's object.
            with contextlib.suppress(Exception):
                await client.abort_copy(copy["copy_id"])
                if (await client.get_blob_properties()).copy.id == copy["copy_id"]:
                    await client.delete_blob()
            raise
        if status != "success":
            msg = f"Azure copy {source} -> {destination} ended with status {status!r}"
            raise OSError(msg)
    fs.invalidate_cache(fs._parent(destination))


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
