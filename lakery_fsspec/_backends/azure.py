"""Azure Blob Storage and Data Lake Gen2, through adlfs and the Azure SDK it wraps."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hashlib
import os
import re
import uuid
import weakref
from collections.abc import Generator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from lakery_fsspec._backends.base import Backend, cleanup
from lakery_fsspec._backends.blocks import BlockWriter
from lakery_fsspec._backends.body import Body
from lakery_fsspec._backends.clock import Aged, Upload, age, server_time
from lakery_fsspec._backends.diagnostics import Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._checksums import b64
from lakery_fsspec._errors import IntegrityError, exception_chain, server_answer
from lakery_fsspec._integrity import computed

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge

__all__ = ["Azure", "AzureBackend", "AzureDiagnostics"]

_COPY_POLL_SECONDS = 0.2
_RAW_BODY = 2**20
"""The largest request body aiohttp takes as bytes without a warning."""
_PUT_BLOCK = 64 * 2**20
"""Block size of whole-object uploads above ``_RAW_BODY`` (the SDK's single-put limit)."""
_CHECKSUM_MISMATCH = frozenset({"Md5Mismatch", "Crc64Mismatch"})
_GET_RANGE = 8 * 2**20
"""The smallest range whole-blob reads fetch past the SDK's first request."""


class AzureBackend(Backend):
    """Azure: atomic block blob uploads, content settings, raw reads, awaited create-only
    copies.

    Every upload request carries its body's MD5 (``Content-MD5``), which Azure verifies
    before it stores anything: a put the blob's, staged blocks each their own.

    Uploads over 1 MiB are staged as blocks here rather than through adlfs and the SDK's
    upload_blob, which hand aiohttp bodies as bytes: above 1 MiB aiohttp warns (an error
    under -W error, where the SDK then fails with "Failed to upload block").
    """

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    bucketed = True
    min_block_size = 8 * 2**20  # each block is one staged-block request
    min_range_size = 8 * 2**20

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        create = options.get("mode") == "create"
        settings = self.write_options(digest)
        if len(data) <= _RAW_BODY:  # one Put Blob
            md5 = await computed(_md5, data)
            await self.io.run(lambda fs: _put_blob(fs, path, data, md5, settings, create))
            return
        if create and await self.exists(path):
            # Refused before any block is staged (a race still loses at the commit).
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
        blocks = _Blocks(path)
        view = memoryview(data)
        try:
            for start in range(0, len(view), _PUT_BLOCK):
                block = view[start : start + _PUT_BLOCK]
                md5 = await computed(_md5, block)
                await self.io.run(
                    partial(blocks.stage, block_id=blocks.new_id(), data=block, md5=md5)
                )
            await self.io.run(partial(blocks.commit, settings=settings, exclusive=create))
        except BaseException:
            # Never over a blob that is there (ours or another writer's): blocks staged
            # for a path that has one expire by themselves.
            await cleanup(
                self.io.run(partial(blocks.discard, exclusive=True)),
                f"drop the staged blocks of {self.protocol}://{path}",
            )
            raise

    def block_writer(self, path: str, digest: Digest, block_size: int) -> BlockWriter:
        return AzureWriter(self.io, path, block_size, self.write_options(digest))

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

    async def copy_new(
        self, source: str, destination: str, digest: Digest, temp: str, *, link: bool = False
    ) -> bool | None:
        # A server-side copy refused over an existing blob, waited for (as move does).
        return await self.io.run(lambda fs: _copy_new(fs, source, destination))

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # adlfs's copy only starts the server-side copy; wait for it before deleting.
        created = await self.io.run(lambda fs: _copy_new(fs, source, destination))
        if not created and not await self.intact(destination, digest["content_size"]):
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


class AzureDiagnostics(Diagnostics):
    """Azure's words: containers, keys, its error codes, the connection string's endpoint."""

    root_kind = "container"
    credentials_hint = (
        "Pass -o connection_string=… or -o account_name=… -o account_key=… (or -o sas_token=…)."
    )
    codes: ClassVar[Mapping[str, str]] = {
        "ContainerNotFound": "no-bucket",
        "AuthenticationFailed": "bad-secret",
        "AuthorizationFailure": "unauthorized",
        "AuthorizationPermissionMismatch": "denied",
        "AuthorizationResourceTypeMismatch": "denied",
        "InsufficientAccountPermissions": "denied",
    }


class Azure(ProtocolSpec):
    """Azure Blob Storage through adlfs, on the caller's loop."""

    names = ("abfs", "az", "abfss")
    filesystem = "adlfs.spec.AzureBlobFileSystem"
    extra = "azure"
    backend = AzureBackend
    diagnostics = AzureDiagnostics
    loop_native = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        connection = options.get("connection_string") or os.environ.get(
            "AZURE_STORAGE_CONNECTION_STRING", ""
        )
        match = re.search(r"BlobEndpoint=([^;]+)", str(connection), re.IGNORECASE)
        return match.group(1) if match else None

    @staticmethod
    def transient(error: BaseException) -> bool:
        # azure-core's errors for a request not sent, or not (completely) answered.
        return any(
            cls.__name__ in ("ServiceRequestError", "ServiceResponseError")
            for cls in type(error).__mro__
        )

    @staticmethod
    async def connect(fs: Any) -> None:
        detach_finalizers(fs)  # the storage closes its copies itself

    @staticmethod
    async def disconnect(fs: Any) -> None:
        from adlfs.utils import close_credential, close_service_client

        await close_service_client(fs)
        await close_credential(fs)


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
        # Past its first 32 MiB, the SDK fetches a blob in 4 MiB ranges by default, each
        # one request (and Azurite hashes every range of up to 4 MiB it serves): 8 MiB
        # ones, as streams read. The setting is the client's, of the storage's own copy.
        config = client._config
        config.max_chunk_get_size = max(config.max_chunk_get_size, _GET_RANGE)
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
            try:
                await _settled(client, destination)  # another writer's copy may be in flight
            except Exception as error:
                if server_answer(error).status != 404:
                    raise
                # Gone since the refusal (that writer's copy failed and was removed).
                return await _copy_new(fs, source, destination)
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
    """The staged blocks of one block blob upload, each sent with its MD5 (which Azure
    verifies before it keeps the block), committed at once.

    Block ids are a prefix unique to this upload and the block's number: all of one
    length, as Azure requires, and never another writer's. Each method takes the
    filesystem to call (a per-loop copy, or the sync instance on its IO loop).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._prefix = uuid.uuid4().hex
        self.ids: list[str] = []

    def new_id(self) -> str:
        """The id of the next block (taken when the block is handed over, in order)."""
        self.ids.append(f"{self._prefix}{len(self.ids):06d}")
        return self.ids[-1]

    async def stage(self, fs: Any, block_id: str, data: bytes | memoryview, md5: bytes) -> None:
        """Upload one block (uncommitted: invisible until ``commit``)."""
        container, blob, _ = fs.split_path(self.path)
        async with fs.service_client.get_blob_client(container, blob) as client:
            with _mismatch_is_integrity_error(self.path):
                await client.stage_block(
                    block_id, Body(data), length=len(data), headers={"Content-MD5": b64(md5)}
                )

    async def commit(self, fs: Any, settings: dict[str, Any], exclusive: bool) -> None:
        """Make the staged blocks the blob, with the content ``settings`` (``write_options``);
        ``exclusive``: FileExistsError if one is there."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError
        from azure.storage.blob import BlobBlock, ContentSettings

        condition = {"match_condition": MatchConditions.IfMissing} if exclusive else {}
        container, blob, _ = fs.split_path(self.path)
        async with fs.service_client.get_blob_client(container, blob) as client:
            try:
                await client.commit_block_list(
                    [BlobBlock(block_id) for block_id in self.ids],
                    content_settings=ContentSettings(**settings["content_settings"]),
                    metadata={"is_directory": "false"},  # as adlfs writes it
                    **condition,
                )
            except (ResourceExistsError, ResourceModifiedError):  # 409 or 412: a blob exists
                msg = os.strerror(errno.EEXIST)
                raise FileExistsError(errno.EEXIST, msg, self.path) from None
        fs.invalidate_cache(fs._parent(self.path))

    async def discard(self, fs: Any, exclusive: bool) -> None:
        """Drop the staged blocks, and the blob if ours: committing a list drops every
        block not in it, so commit none, then delete the empty blob that made. With
        ``exclusive``, never over an existing blob (another writer's object): blocks
        staged there expire by themselves (Azure drops them after a week)."""
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError

        condition = {"match_condition": MatchConditions.IfMissing} if exclusive else {}
        container, blob, _ = fs.split_path(self.path)
        async with fs.service_client.get_blob_client(container, blob) as client:
            try:
                empty = await client.commit_block_list([], **condition)
            except (ResourceExistsError, ResourceModifiedError):
                return
            await client.delete_blob(
                etag=empty["etag"], match_condition=MatchConditions.IfNotModified
            )


class AzureWriter(BlockWriter):
    """A stream's blob: blocks staged with their MD5 and committed as one block list
    with the content settings; a stream of at most 1 MiB is a single Put Blob with its
    MD5. ``abort`` drops the staged blocks and any blob committed (the path is the
    writer's own temp), so none stay behind."""

    def __init__(self, io: Bridge, path: str, block_size: int, settings: dict[str, Any]) -> None:
        super().__init__(io, block_size)
        self._blocks = _Blocks(path)
        self._settings = settings
        self._sent = False

    async def _send_block(self, block: bytes) -> None:
        self._sent = True
        block_id = self._blocks.new_id()
        md5 = await computed(_md5, block)
        await self._start(partial(self._blocks.stage, block_id=block_id, data=block, md5=md5))

    async def _finish(self, last: bytes) -> None:
        path = self._blocks.path
        if not self._sent and len(last) <= _RAW_BODY:
            self._sent = True
            md5 = await computed(_md5, last)
            await self._run(lambda fs: _put_blob(fs, path, last, md5, self._settings, False))
            return
        if last:
            await self._send_block(last)
        await self._run(partial(self._blocks.commit, settings=self._settings, exclusive=False))

    async def _discard(self) -> None:
        if self._sent:
            await self._run(partial(self._blocks.discard, exclusive=False))


def _md5(data: bytes | memoryview) -> bytes:
    return hashlib.md5(data).digest()


async def _put_blob(
    fs: Any, path: str, data: bytes, md5: bytes, options: dict[str, Any], exclusive: bool
) -> None:
    """One Put Blob carrying its MD5 (at most 1 MiB: aiohttp takes it as bytes);
    FileExistsError if ``exclusive`` and a blob exists."""
    with _mismatch_is_integrity_error(path):
        await fs._pipe_file(
            path,
            data,
            mode="create" if exclusive else "overwrite",
            headers={"Content-MD5": b64(md5)},
            **options,
        )


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


def _not_found(path: str) -> FileNotFoundError:
    return FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), path)
