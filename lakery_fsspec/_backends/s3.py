"""Amazon S3 and compatible stores, through s3fs."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import os
import threading
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable, Generator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from lakery_fsspec._backends.base import Backend, cleanup
from lakery_fsspec._backends.blocks import BlockWriter, upload_blocks, whole
from lakery_fsspec._backends.clock import Aged, Upload, age, server_time
from lakery_fsspec._backends.diagnostics import Diagnostics
from lakery_fsspec._backends.s3_requests import (
    CHECKSUMS,
    CONDITIONS,
    Features,
    looking_again,
    send,
)
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._checksums import b64, digest_sha256, sha256
from lakery_fsspec._errors import IntegrityError, exception_chain
from lakery_fsspec._integrity import computed

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge

__all__ = ["S3", "S3Backend", "S3Diagnostics"]

_MAX_PART_COPY = 5 * 2**30  # S3's limit for one UploadPartCopy (and one CopyObject)
_MAX_PUT_OBJECT = 5 * 2**30  # and for a single PutObject
_MAX_PARTS = 10_000
_CHECKSUM_MISMATCH = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
"""Error codes of a body whose checksum differs from the one sent (AWS, R2: BadDigest;
MinIO for x-amz-checksum-*: XAmzContentChecksumMismatch)."""


class S3Backend(Backend):
    """S3: atomic PUTs, one-HEAD existence checks, create-only copy + delete moves,
    one-GET streams.

    Every upload carries a checksum that S3 verifies before it stores anything: a put
    the digest's own SHA-256 (``x-amz-checksum-sha256``, no hashing), a stream CRC32s
    (see S3Writer).
    """

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    bucketed = True
    min_block_size = 5 * 2**20

    def __init__(self, protocol: str, bridge: Bridge) -> None:
        super().__init__(protocol, bridge)
        where = S3.endpoint(self.fs.storage_options) or "Amazon S3"
        self.features = Features(f"S3 server {where}")
        """What this server refused of the optional request headers (see s3_requests)."""

    async def root_missing(self, root: str, error: FileNotFoundError) -> bool:
        # S3 names the missing bucket in the error (probing it would need more rights).
        return any(_error_code(item) == "NoSuchBucket" for item in exception_chain(error))

    def write_options(self, digest: Digest) -> dict[str, Any]:
        options = {"ContentType": digest["content_type"]}
        if digest["content_encoding"]:
            options["ContentEncoding"] = digest["content_encoding"]
        return options

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        exclusive = options.pop("mode", "overwrite") == "create"
        if len(data) > _MAX_PUT_OBJECT:
            part_size = max(self.min_block_size, -(-len(data) // _MAX_PARTS))
            writer = self._writer(path, digest, part_size, exclusive)
            await upload_blocks(writer, whole(data, part_size), f"{self.protocol}://{path}")
            return
        if exclusive and not self.features.accepts(CONDITIONS):
            # The server refused If-None-Match: check, then write.
            if await self.exists(path):
                raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), path)
            exclusive = False
        extra = {**self.write_options(digest), **options}
        if exclusive:
            extra["IfNoneMatch"] = "*"
        if self.checksums:
            recorded = digest_sha256(digest) if digest["content_size"] == len(data) else None
            extra["ChecksumSHA256"] = b64(recorded or await computed(sha256, data))

        async def put_object() -> None:
            with _mismatch_is_integrity_error(path):
                await self.io.run(
                    lambda fs: send(
                        fs, "put_object", self.features, **_location(fs, path), Body=data, **extra
                    )
                )

        if exclusive:
            await looking_again(put_object, lambda: self.exists(path), self.io.timeout)
        else:
            await put_object()

    def block_writer(self, path: str, digest: Digest, block_size: int) -> BlockWriter:
        return self._writer(path, digest, block_size)

    async def upload_new(
        self,
        path: str,
        stream: AsyncIterable[bytes],
        digest: Digest,
        chunk_size: int,
        temp: str,
    ) -> bool:
        # A multipart upload is invisible until completed, and its completion (or a
        # single PutObject) refuses an existing key: no temp object, no server-side move.
        if digest["content_size"] == 0:
            return await self._put_new(path, b"", digest)
        writer = self._writer(path, digest, self.block_size(chunk_size), exclusive=True)
        try:
            await upload_blocks(writer, stream, f"{self.protocol}://{path}")
        except FileExistsError:
            return False
        return True

    @property
    def checksums(self) -> bool:
        """Whether uploads carry checksums: unless the client is told to compute only
        those an operation requires (botocore's ``request_checksum_calculation=
        "when_required"``, in ``config_kwargs`` or the environment), the escape hatch for
        S3-compatible servers that refuse them."""
        setting = self.fs.config_kwargs.get("request_checksum_calculation") or os.environ.get(
            "AWS_REQUEST_CHECKSUM_CALCULATION", ""
        )
        return str(setting).lower() != "when_required" and self.features.accepts(CHECKSUMS)

    def _writer(
        self, path: str, digest: Digest, block_size: int, exclusive: bool = False
    ) -> S3Writer:
        options = self.write_options(digest)
        return S3Writer(
            self.io, path, block_size, options, exclusive, self.checksums, self.features
        )

    async def size(self, path: str) -> int | None:
        # s3fs's info() follows a miss with a listing; one HEAD is enough for an object.
        bucket, key, _ = self.fs.split_path(path)
        try:
            head = await self.io.run(lambda fs: send(fs, "head_object", Bucket=bucket, Key=key))
        except FileNotFoundError:
            return None
        return int(head["ContentLength"])

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None and end is None:
            # s3fs's cat_file sends a HEAD first (to split large objects); one GET will do.
            return await self.io.run(lambda fs: _get_object(fs, path))
        if start is not None and end is not None and start >= end:
            return b""  # S3 ignores an empty Range and would send the whole object
        return await super().read(path, start, end)

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        # One streamed GET instead of a ranged GET per chunk.
        file = await self.io.run(lambda fs: fs.open_async(path, "rb"))
        try:
            while chunk := await self.io.run(lambda _: _read_up_to(file, chunk_size)):
                yield chunk
        finally:
            if file.r is not None:  # the async file's close() does not release the connection
                file.r.close()

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # The refusal below comes only after the server has copied the whole object; a
        # HEAD first saves that copy when the content is already stored.
        # The HEAD's size also tells a damaged object, which is replaced.
        if await self.intact(destination, digest["content_size"]):
            await self.remove(source)
            return False
        if digest["content_size"] == 0:
            created = await self._put_new(destination, b"", digest)
        else:
            created = await self._copy_new(source, destination, digest)
        await self.remove(source)
        return created

    async def copy_new(
        self, source: str, destination: str, digest: Digest, temp: str, *, link: bool = False
    ) -> bool | None:
        if digest["content_size"] == 0:
            return await self._put_new(destination, b"", digest)
        return await self._copy_new(source, destination, digest)

    async def _put_new(self, path: str, data: bytes, digest: Digest) -> bool:
        try:
            await self.put(path, data, digest, mode="create")  # PutObject, If-None-Match: *
        except FileExistsError:
            return False
        return True

    async def _copy_new(self, source: str, destination: str, digest: Digest) -> bool:
        """Copy server-side as a multipart upload completed with ``If-None-Match: *``:
        whether the object was created (False: one was there already).

        AWS also honours If-None-Match on a single CopyObject, but S3-compatible servers
        and moto (5.2) ignore it there and overwrite; on CompleteMultipartUpload they
        enforce it. The parts (one up to 5 GiB) carry no metadata: the upload does.

        The copy asks for a full-object CRC32 like S3Writer's (which the server computes
        from the copied bytes); without one, the object would lose its checksum.
        """
        bucket, key, _ = self.fs.split_path(destination)
        source_bucket, source_key, version = self.fs.split_path(source)
        copy_source = {"Bucket": source_bucket, "Key": source_key}
        if version:
            copy_source["VersionId"] = version
        target = {"Bucket": bucket, "Key": key}
        options = self.write_options(digest)
        if self.checksums:
            options |= {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}
        upload = await self.io.run(
            lambda fs: send(fs, "create_multipart_upload", self.features, **target, **options)
        )
        target["UploadId"] = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            size = digest["content_size"]
            for number, start in enumerate(range(0, size, _MAX_PART_COPY), start=1):
                span = f"bytes={start}-{min(start + _MAX_PART_COPY, size) - 1}"
                part = await self.io.run(
                    lambda fs, number=number, span=span: send(
                        fs,
                        "upload_part_copy",
                        **target,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=span,
                    )
                )
                copied = part["CopyPartResult"]
                done = {"PartNumber": number, "ETag": copied["ETag"]}
                if "ChecksumCRC32" in copied:  # AWS reports each copied part's CRC32
                    done["ChecksumCRC32"] = copied["ChecksumCRC32"]
                parts.append(done)
            await looking_again(
                lambda: self.io.run(
                    lambda fs: send(
                        fs,
                        "complete_multipart_upload",
                        self.features,
                        **target,
                        MultipartUpload={"Parts": parts},
                        IfNoneMatch="*",
                    )
                ),
                lambda: self.exists(destination),
                self.io.timeout,
            )
        except FileExistsError:  # 412, or 409 and then there: the object was created meanwhile
            await self._abort(target)
            return False
        except BaseException:
            await self._abort(target)
            raise
        return True

    async def _abort(self, upload: dict[str, Any]) -> None:
        where = f"s3://{upload['Bucket']}/{upload['Key']}"
        await cleanup(
            self.io.run(lambda fs: send(fs, "abort_multipart_upload", **upload)),
            f"abort the multipart copy to {where} (upload {upload['UploadId']})",
        )

    async def list_aged(self, folder: str) -> list[Aged]:
        bucket, key, _ = self.fs.split_path(folder)
        return await self.io.run(lambda fs: _list_objects(fs, bucket, key.rstrip("/") + "/"))

    async def list_uploads(self, folder: str) -> list[Upload]:
        # A writer killed mid-stream leaves its multipart upload: no object, yet billed.
        bucket, key, _ = self.fs.split_path(folder)
        prefix = key.rstrip("/") + "/"
        try:
            listed = await self.io.run(lambda fs: _list_uploads(fs, bucket, prefix))
            uploads: list[Upload] = []
            for upload in listed:
                seconds = await self.io.run(partial(_upload_age, bucket=bucket, upload=upload))
                if seconds is not None:
                    uploads.append(Upload(f"{bucket}/{upload['Key']}", seconds, upload["UploadId"]))
            return uploads
        except PermissionError as error:
            msg = (
                f"{error} (listing unfinished uploads needs s3:ListBucketMultipartUploads "
                "and s3:ListMultipartUploadParts; aborting them, s3:AbortMultipartUpload)"
            )
            raise PermissionError(msg) from error

    async def abort_upload(self, path: str, upload_id: str | None) -> None:
        bucket, key, _ = self.fs.split_path(path)
        with contextlib.suppress(FileNotFoundError):  # NoSuchUpload: completed or aborted
            await self.io.run(
                lambda fs: send(
                    fs, "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id
                )
            )


class S3Diagnostics(Diagnostics):
    """S3's words: IAM actions, error codes, endpoints (``AWS_ENDPOINT_URL``)."""

    root_kind = "bucket"
    endpoint_option = "endpoint_url"
    credentials_hint = (
        "Pass -o key=ACCESS_KEY -o secret=SECRET_KEY, or set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or -o profile=NAME; -o anon=true for a public bucket)."
    )
    codes: ClassVar[Mapping[str, str]] = {
        "NoSuchBucket": "no-bucket",
        "InvalidAccessKeyId": "bad-key",
        "InvalidClientTokenId": "bad-key",
        "UnrecognizedClientException": "bad-key",
        "SignatureDoesNotMatch": "bad-secret",
        "ExpiredToken": "expired",
        "TokenRefreshRequired": "expired",
        "InvalidToken": "expired",
        "AccessDenied": "denied",
        "AllAccessDisabled": "denied",
        "AccountProblem": "denied",
    }
    operations: ClassVar[Mapping[str, str]] = {
        "PutObject": "write",
        "CreateMultipartUpload": "write",
        "UploadPart": "write",
        "CompleteMultipartUpload": "write",
        "CopyObject": "move",
        "UploadPartCopy": "move",
        "DeleteObject": "delete",
        "DeleteObjects": "delete",
        "AbortMultipartUpload": "delete",
        "GetObject": "read",
        "HeadObject": "read",
        "ListObjectsV2": "list",
        "ListObjects": "list",
        "HeadBucket": "list",
    }
    permissions: ClassVar[Mapping[str, str]] = {
        "write": "s3:PutObject",
        "move": "s3:GetObject and s3:PutObject",
        "delete": "s3:DeleteObject",
        "read": "s3:GetObject",
        "list": "s3:ListBucket",
    }
    bare_refusals = True

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        # One attempt per request (s3fs still retries a few times itself).
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", min(timeout, 5.0))
        config.setdefault("retries", {"max_attempts": 1})
        return {**options, "config_kwargs": config}


class S3(ProtocolSpec):
    """S3 and compatible stores through s3fs, on the caller's loop with shared clients."""

    names = ("s3", "s3a")
    filesystem = "s3fs.core.S3FileSystem"
    extra = "s3"
    backend = S3Backend
    diagnostics = S3Diagnostics
    loop_native = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        client_kwargs = options.get("client_kwargs")
        nested = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, dict) else None
        found = options.get("endpoint_url") or nested
        found = found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return str(found) if found else None

    @staticmethod
    def transient(error: BaseException) -> bool:
        # botocore's transport errors, by name (botocore is imported only with s3fs).
        return any(cls.__name__ in _BOTOCORE_TRANSIENT for cls in type(error).__mro__)

    @classmethod
    def copy_options(cls, fs: Any) -> dict[str, Any]:
        # A user's own session, HTTP transport or per-region clients stay theirs. (Their
        # options, not fs's attributes: fs gets a session of its own once it connects.)
        options = fs.storage_options
        config = options.get("config_kwargs") or {}
        if options.get("session") or options.get("cache_regions") or "http_session_cls" in config:
            return {}
        shared: dict[str, Any] = {"http_session_cls": LoopPools}
        if not os.environ.get("AWS_RESPONSE_CHECKSUM_VALIDATION"):
            # botocore would otherwise ask for and CRC32 every streamed object it reads
            # (they carry a full-object CRC32); verify_reads checks the pointer's SHA-256.
            shared["response_checksum_validation"] = "when_required"
        return {
            "session": SharedClients(fs.kwargs),  # what s3fs would give AioSession
            "config_kwargs": {**shared, **config},
        }

    @staticmethod
    async def connect(fs: Any) -> None:
        await fs.set_session()

    @staticmethod
    async def disconnect(fs: Any) -> None:
        if fs._s3 is not None:
            await fs._s3creator.__aexit__(None, None, None)


_BOTOCORE_TRANSIENT = frozenset(
    {"ConnectionError", "ConnectionClosedError", "ConnectTimeoutError", "ReadTimeoutError"}
)
"""botocore's exceptions for a request that got no (complete) answer."""


async def _list_objects(fs: Any, bucket: str, prefix: str) -> list[Aged]:
    """Objects directly under ``prefix``, aged by the server's clock."""
    found: list[Aged] = []
    page: dict[str, Any] = {"IsTruncated": True}
    while page.get("IsTruncated"):
        token = page.get("NextContinuationToken")
        more = {"ContinuationToken": token} if token else {}
        page = await send(
            fs, "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", **more
        )
        now = _server_time(page)
        for item in page.get("Contents", []):
            found.append(Aged(f"{bucket}/{item['Key']}", age(now, item["LastModified"])))
    return found


async def _list_uploads(fs: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Multipart uploads to keys directly under ``prefix``, as ListMultipartUploads
    describes them."""
    listed: list[dict[str, Any]] = []
    page: dict[str, Any] = {"IsTruncated": True}
    while page.get("IsTruncated"):
        more: dict[str, str] = {}
        if "NextKeyMarker" in page:
            more = {"KeyMarker": page["NextKeyMarker"]}
            more["UploadIdMarker"] = page.get("NextUploadIdMarker", "")
        page = await send(
            fs, "list_multipart_uploads", None, Bucket=bucket, Prefix=prefix, Delimiter="/", **more
        )
        listed += [
            upload
            for upload in page.get("Uploads", [])
            if "/" not in upload["Key"][len(prefix) :]  # not every server honours Delimiter
        ]
    return listed


async def _upload_age(fs: Any, *, bucket: str, upload: dict[str, Any]) -> float | None:
    """Seconds since the upload's last part arrived (since it began, without parts) by
    the server's clock; None if it has finished meanwhile.

    An upload that still receives parts is in flight however long ago it began (and
    moto reports a fixed ``Initiated`` from 2010 for every upload).
    """
    latest = upload["Initiated"]
    page: dict[str, Any] = {"IsTruncated": True}
    while page.get("IsTruncated"):
        marker = page.get("NextPartNumberMarker")
        more = {"PartNumberMarker": marker} if marker else {}
        try:
            page = await send(
                fs,
                "list_parts",
                Bucket=bucket,
                Key=upload["Key"],
                UploadId=upload["UploadId"],
                **more,
            )
        except FileNotFoundError:  # NoSuchUpload
            return None
        latest = max([latest, *(part["LastModified"] for part in page.get("Parts", []))])
    return age(_server_time(page), latest)


def _server_time(response: dict[str, Any]) -> float:
    return server_time(response.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date"))


def _error_code(error: BaseException) -> str | None:
    """The S3 error code of a botocore ClientError, if ``error`` is one."""
    response = getattr(error, "response", None)
    return response.get("Error", {}).get("Code") if isinstance(response, dict) else None


class S3Writer(BlockWriter):
    """A multipart upload with CRC32 checksums S3 verifies: each part's on UploadPart,
    and the whole object's (``ChecksumType=FULL_OBJECT``) on completion, which is then
    also compared with the checksum the server reports for the bytes it assembled
    (servers that do not verify, such as moto, still compute it). A stream shorter than
    one part is a single PutObject with its CRC32. ``abort`` aborts the multipart upload,
    so no unfinished upload stays billed. With ``exclusive``, the completion refuses to
    overwrite an existing object (FileExistsError).

    With ``checksums=False`` (see ``S3Backend.checksums``) it is a plain multipart upload.
    CRC32 rather than SHA-256: a stream's SHA-256 is not known before its end, S3 checks
    a whole multipart object only against a CRC, and zlib computes it at twice the speed.
    """

    def __init__(
        self,
        io: Bridge,
        path: str,
        block_size: int,
        options: dict[str, Any],
        exclusive: bool = False,
        checksums: bool = True,
        features: Features | None = None,
    ) -> None:
        super().__init__(io, block_size)
        self._checksums = checksums
        self._features = features or Features(f"s3://{path}")
        self._path = path
        self._where = _location(io.fs, path)
        self._options = options
        self._match = {"IfNoneMatch": "*"} if exclusive else {}
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._crc = 0  # of everything sent so far
        self._completed = False

    async def _call(self, method: str, **kwargs: Any) -> Any:
        with _mismatch_is_integrity_error(self._path):
            return await self._run(
                lambda fs: send(fs, method, self._features, **self._where, **kwargs)
            )

    async def _send_block(self, block: bytes) -> None:
        if self._upload_id is None:
            full = {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}
            created = await self._call(
                "create_multipart_upload", **(full if self._checksums else {}), **self._options
            )
            self._upload_id = str(created["UploadId"])
        part: dict[str, Any] = {"PartNumber": len(self._parts) + 1}
        if self._checksums:
            crc, self._crc = await computed(partial(_crc32s, running=self._crc), block)
            part["ChecksumCRC32"] = _crc32_text(crc)
        self._parts.append(part)
        await self._start(partial(self._upload_part, part=part, block=block))

    async def _upload_part(self, fs: Any, part: dict[str, Any], block: bytes) -> None:
        with _mismatch_is_integrity_error(self._path):
            sent = await send(
                fs,
                "upload_part",
                self._features,
                **self._where,
                UploadId=self._upload_id,
                Body=block,
                **part,
            )
        part["ETag"] = sent["ETag"]

    async def _finish(self, last: bytes) -> None:
        if self._upload_id is None:
            options = {**self._options, **self._match}
            if self._checksums:
                options["ChecksumCRC32"] = _crc32_text(await computed(zlib.crc32, last))
            await self._call("put_object", Body=last, **options)
            return
        if last:
            await self._send_block(last)
        await self._settle()  # every part's ETag is known
        expected = _crc32_text(self._crc)
        full = {"ChecksumCRC32": expected, "ChecksumType": "FULL_OBJECT"}
        completed = await self._call(
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
            **(full if self._checksums else {}),
            **self._match,
        )
        self._upload_id = None
        self._completed = True  # from now on, abort deletes the object
        if not self._checksums or not self._features.accepts(CHECKSUMS):
            return
        reported = completed.get("ChecksumCRC32")
        if reported is None:  # moto reports it only when asked
            head = await self._call("head_object", ChecksumMode="ENABLED")
            reported = head.get("ChecksumCRC32")
        if reported is not None and reported != expected:
            msg = (
                f"Upload to s3://{self._path} failed: checksum mismatch. The server "
                f"assembled bytes with CRC32 {reported} where {expected} was sent "
                "(damaged in transit)."
            )
            raise IntegrityError(msg)

    async def _discard(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with contextlib.suppress(FileNotFoundError):  # already completed or aborted
                await self._call("abort_multipart_upload", UploadId=upload_id)
        if self._completed:
            with contextlib.suppress(FileNotFoundError):
                await self._call("delete_object")


def _crc32s(block: bytes | memoryview, running: int) -> tuple[int, int]:
    """The CRC32 of ``block``, and ``running`` (a CRC32 so far) extended by it."""
    return zlib.crc32(block), zlib.crc32(block, running)


def _crc32_text(value: int) -> str:
    """A CRC32 as S3's checksum headers carry it: base64 of its 4 big-endian bytes."""
    return b64(value.to_bytes(4, "big"))


def _location(fs: Any, path: str) -> dict[str, str]:
    bucket, key, _ = fs.split_path(path)
    return {"Bucket": bucket, "Key": key}


@contextlib.contextmanager
def _mismatch_is_integrity_error(path: str) -> Generator[None]:
    """Raise IntegrityError where S3 refused a body that does not match its checksum."""
    try:
        yield
    except OSError as error:
        codes = {_error_code(item) for item in exception_chain(error)}
        if codes & _CHECKSUM_MISMATCH:
            msg = (
                f"Upload to s3://{path} failed: checksum mismatch. S3 refused the body "
                "because it does not match the SHA-256 sent with it (damaged in transit, "
                "or the data differs from its digest); nothing was stored."
            )
            raise IntegrityError(msg) from error
        raise


async def _get_object(fs: Any, path: str) -> bytes:
    bucket, key, version = fs.split_path(path)
    version_option = {"VersionId": version} if version else {}
    response = await send(fs, "get_object", Bucket=bucket, Key=key, **version_option)
    try:
        return await response["Body"].read()
    finally:
        response["Body"].close()


async def _read_up_to(file: Any, size: int) -> bytes:
    """Read ``size`` bytes, fewer only at the end; the body arrives in smaller pieces."""
    parts: list[bytes] = []
    missing = size
    while missing and (part := await file.read(missing)):
        parts.append(part)
        missing -= len(part)
    return b"".join(parts)


class SharedClients:
    """The aiobotocore session of one filesystem's per-loop copies: one client per process.

    Building an S3 client costs ~0.2 s of CPU (botocore reads its JSON data, registers
    its handlers, builds a class of 100+ methods, and an SSL context). Its only
    loop-bound part is its connection pool, which ``LoopPools`` keeps per loop; so every
    copy, on whichever loop, gets the same client, and a copy's "close" closes its loop's
    pool. s3fs asks a session passed as ``session=`` for clients only
    (``create_client``).

    A client is shared only if nothing in it is bound to the loop it was made on:
    credentials that refresh (instance roles, SSO, assume-role) and adaptive retries
    hold asyncio locks. Then each loop builds its own client from its own session, as
    s3fs does. State is kept per process id: a ``fork`` child builds its own (and keeps
    the parent's objects unused, so that collecting them closes nothing of the parent's).
    """

    def __init__(self, session_options: dict[str, Any]) -> None:
        self._session_options = dict(session_options)  # what s3fs would give AioSession
        self._states: dict[int, _ProcessClients] = {}

    def create_client(self, *args: Any, **kwargs: Any) -> ClientContext:
        """What ``AioSession.create_client`` returns: a client context."""
        pid = os.getpid()
        if (state := self._states.get(pid)) is None:
            state = self._states.setdefault(pid, _ProcessClients(self._session_options))
        return ClientContext(state, args, kwargs)


class _ProcessClients:
    """One process's shared clients, and the session that makes them."""

    def __init__(self, session_options: dict[str, Any]) -> None:
        self.session_options = session_options
        self.session: Any = None  # made on first use; None once sharing is ruled out
        self.sharing = True
        self.clients: list[tuple[tuple[Any, ...], Any]] = []  # (create_client's arguments, client)
        self.building = False  # a client is being made on self.session
        self.lock = threading.Lock()  # this process's own, never held across a fork

    def new_session(self) -> Any:
        from aiobotocore.session import AioSession

        return AioSession(**self.session_options)


class ClientContext:
    """``async with`` an S3 client: the shared one, or one owned by the running loop."""

    def __init__(
        self, state: _ProcessClients, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> None:
        self._state = state
        self._args = args
        self._kwargs = kwargs
        config = kwargs.get("config")
        options = getattr(config, "_user_provided_options", None) if config else None
        others = {key: value for key, value in kwargs.items() if key != "config"}
        self._signature = (args, others, options)
        self._client: Any = None

    async def __aenter__(self) -> Any:
        state = self._state
        with state.lock:
            known = (client for signature, client in state.clients if signature == self._signature)
            if (client := next(known, None)) is not None:
                self._client = client
                return client
            # One client at a time is made on the shared session; a loop that would
            # wait for it makes its own instead (never blocking its thread on a lock).
            shared = state.sharing and not state.building
            if shared:
                state.building = True
                state.session = state.session or state.new_session()
        session = state.session if shared else state.new_session()
        try:
            client = await session.create_client(*self._args, **self._kwargs).__aenter__()
            if shared:
                loop_free = await _loop_free(session, self._kwargs)
                with state.lock:
                    if loop_free:
                        state.clients.append((self._signature, client))
                    else:
                        # This client stays the running loop's, and the next loops
                        # make their own, each from its own session.
                        state.sharing, state.session = False, None
        finally:
            if shared:
                state.building = False
        self._client = client
        return client

    async def __aexit__(self, *exc_info: object) -> None:
        # The client's HTTP session is a LoopPools: this closes the running loop's pool,
        # which is all there is of a client owned by this loop.
        if self._client is not None:
            await self._client.__aexit__(*exc_info)


async def _loop_free(session: Any, kwargs: dict[str, Any]) -> bool:
    """Whether a client made with these arguments holds nothing bound to one loop:
    credentials that never refresh (or none), and no adaptive retries."""
    from botocore import UNSIGNED
    from botocore.credentials import RefreshableCredentials

    config = kwargs.get("config")
    retries = (getattr(config, "retries", None) or {}).get("mode")
    if (retries or session.get_config_variable("retry_mode")) == "adaptive":
        return False
    if kwargs.get("aws_access_key_id") and kwargs.get("aws_secret_access_key"):
        return True
    if getattr(config, "signature_version", None) is UNSIGNED:
        return True
    return not isinstance(await session.get_credentials(), RefreshableCredentials)


class LoopPools:
    """aiobotocore's HTTP session (``http_session_cls``) for a client used from many
    event loops: one ``AIOHTTPSession`` connection pool per loop, made on the loop's
    first request and closed by ``close`` on that loop (its copy's disconnect).

    The SSL contexts (loading the CA bundle) are built once per client, not once per
    pool.
    """

    def __init__(self, **options: Any) -> None:
        self._options = options
        self._pools: dict[asyncio.AbstractEventLoop, Any] = {}
        self._ssl: dict[str | None, Any] = {}

    @property
    def _sessions(self) -> dict[str, Any]:
        # s3fs reads this to tell whether the client was closed and must be remade: a
        # LoopPools never is (a loop whose pool was closed gets a new one).
        return {}

    async def __aenter__(self) -> LoopPools:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the running loop's pool."""
        pool = self._pools.pop(asyncio.get_running_loop(), None)
        if pool is not None:
            await pool.close()

    async def send(self, request: Any) -> Any:
        """Send ``request`` through the running loop's pool."""
        loop = asyncio.get_running_loop()
        if (pool := self._pools.get(loop)) is None:
            pool = _pool_class()(self, **self._options)
            await pool.__aenter__()
            if (first := self._pools.setdefault(loop, pool)) is not pool:
                await pool.close()
                pool = first
        return await pool.send(request)

    def ssl_contexts(self, proxy_url: str | None, build: Callable[[], Any]) -> Any:
        """The SSL contexts for ``proxy_url`` (see AIOHTTPSession), built the first time."""
        if (contexts := self._ssl.get(proxy_url)) is None:
            contexts = self._ssl.setdefault(proxy_url, build())
        return contexts

    def built_ssl_contexts(self, proxy_url: str | None) -> Any:
        """The SSL contexts for ``proxy_url`` if built already, else None."""
        return self._ssl.get(proxy_url)


@functools.cache
def _pool_class() -> type[Any]:
    """AIOHTTPSession taking its SSL contexts from its LoopPools (made on first use:
    aiobotocore is the s3 extra's)."""
    import aiohttp
    from aiobotocore.httpsession import AIOHTTPSession

    class Pool(AIOHTTPSession):
        def __init__(self, owner: LoopPools, **options: Any) -> None:
            super().__init__(**options)
            self._owner = owner

        def _build_ssl_contexts(self, proxy_url: str | None) -> Any:
            build = super()._build_ssl_contexts
            return self._owner.ssl_contexts(proxy_url, lambda: build(proxy_url))

        async def _create_connector(self, proxy_url: str | None) -> Any:
            # aiobotocore builds the contexts in a worker thread, which in a new loop
            # means a new thread to start, and to join when the loop ends.
            contexts = self._owner.built_ssl_contexts(proxy_url)
            if proxy_url is not None or contexts is None:
                return await super()._create_connector(proxy_url)
            options: dict[str, Any] = dict(self._connector_args or {})
            return aiohttp.TCPConnector(
                limit=self._max_pool_connections, ssl=contexts[0], **options
            )

    return Pool
