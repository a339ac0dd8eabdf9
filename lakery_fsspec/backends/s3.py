"""Amazon S3 and compatible stores, through s3fs."""

from __future__ import annotations

import contextlib
import os
import zlib
from collections.abc import AsyncIterator, Generator
from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend, Writer
from lakery_fsspec.backends.blocks import BlockWriter, upload_whole
from lakery_fsspec.checksums import b64, computed, digest_sha256, sha256
from lakery_fsspec.errors import IntegrityError, exception_chain

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["S3Backend"]

_MAX_COPY_OBJECT = 5 * 2**30  # S3's limit for a single CopyObject
_MAX_PUT_OBJECT = 5 * 2**30  # and for a single PutObject
_MAX_PARTS = 10_000
_CHECKSUM_MISMATCH = frozenset({"BadDigest", "XAmzContentChecksumMismatch"})
"""Error codes of a body whose checksum differs from the one sent (AWS, R2: BadDigest;
MinIO for x-amz-checksum-*: XAmzContentChecksumMismatch)."""


class S3Backend(Backend):
    """S3: atomic PUTs, one-HEAD existence checks, copy + delete moves, one-GET streams.

    Every upload carries a checksum that S3 verifies before it stores anything: a put
    the digest's own SHA-256 (``x-amz-checksum-sha256``, no hashing), a stream CRC32s
    (see S3Writer).
    """

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 5 * 2**20
    loop_native = True

    @staticmethod
    async def connect(fs: Any) -> None:
        await fs.set_session()

    @staticmethod
    async def disconnect(fs: Any) -> None:
        if fs._s3 is not None:
            await fs._s3creator.__aexit__(None, None, None)

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
            await upload_whole(self.io, writer, data, f"{self.protocol}://{path}")
            return
        extra = {**self.write_options(digest), **options}
        if exclusive:
            extra["IfNoneMatch"] = "*"
        if self.checksums:
            recorded = digest_sha256(digest) if digest["content_size"] == len(data) else None
            extra["ChecksumSHA256"] = b64(recorded or await computed(self.io, sha256, data))
        with _mismatch_is_integrity_error(path):
            await self.io.run(
                lambda fs: fs._call_s3("put_object", **_location(fs, path), Body=data, **extra)
            )

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return self._writer(path, digest, block_size)

    @property
    def checksums(self) -> bool:
        """Whether uploads carry checksums: unless the client is told to compute only
        those an operation requires (botocore's ``request_checksum_calculation=
        "when_required"``, in ``config_kwargs`` or the environment), the escape hatch for
        S3-compatible servers that refuse them."""
        setting = self.fs.config_kwargs.get("request_checksum_calculation") or os.environ.get(
            "AWS_REQUEST_CHECKSUM_CALCULATION", ""
        )
        return str(setting).lower() != "when_required"

    def _writer(
        self, path: str, digest: Digest, block_size: int, exclusive: bool = False
    ) -> S3Writer:
        options = self.write_options(digest)
        return S3Writer(self.fs, path, block_size, options, exclusive, self.checksums)

    async def size(self, path: str) -> int | None:
        # s3fs's info() follows a miss with a listing; one HEAD is enough for an object.
        bucket, key, _ = self.fs.split_path(path)
        try:
            head = await self.io.run(lambda fs: fs._call_s3("head_object", Bucket=bucket, Key=key))
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

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        if digest["content_size"] <= _MAX_COPY_OBJECT:
            # One CopyObject (metadata copied with it), where s3fs would copy objects
            # above 150 MiB part by part, serially.
            await self.io.run(lambda fs: fs._copy_basic(source, destination))
        else:
            # Copied in parts, which keep only the metadata passed here.
            await self.io.call("cp_file", source, destination, **self.write_options(digest))
        await self.remove(source)


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
        fs: Any,
        path: str,
        block_size: int,
        options: dict[str, Any],
        exclusive: bool = False,
        checksums: bool = True,
    ) -> None:
        super().__init__(fs, block_size)
        self._checksums = checksums
        self._path = path
        self._where = _location(fs, path)
        self._options = options
        self._match = {"IfNoneMatch": "*"} if exclusive else {}
        self._upload_id: str | None = None
        self._parts: list[dict[str, Any]] = []
        self._crc = 0  # of everything sent so far
        self._completed = False

    def _call(self, method: str, **kwargs: Any) -> Any:
        with _mismatch_is_integrity_error(self._path):
            return self._run(self._fs._call_s3, method, **self._where, **kwargs)

    def _send_block(self, block: bytes) -> None:
        if self._upload_id is None:
            full = {"ChecksumAlgorithm": "CRC32", "ChecksumType": "FULL_OBJECT"}
            created = self._call(
                "create_multipart_upload", **(full if self._checksums else {}), **self._options
            )
            self._upload_id = str(created["UploadId"])
        part: dict[str, Any] = {"PartNumber": len(self._parts) + 1}
        if self._checksums:
            part["ChecksumCRC32"] = _crc32_text(zlib.crc32(block))
            self._crc = zlib.crc32(block, self._crc)
        self._parts.append(part)
        self._start(self._upload_part, part, block)

    async def _upload_part(self, part: dict[str, Any], block: bytes) -> None:
        with _mismatch_is_integrity_error(self._path):
            sent = await self._fs._call_s3(
                "upload_part", **self._where, UploadId=self._upload_id, Body=block, **part
            )
        part["ETag"] = sent["ETag"]

    def _finish(self, last: bytes) -> None:
        if self._upload_id is None:
            options = {**self._options, **self._match}
            if self._checksums:
                options["ChecksumCRC32"] = _crc32_text(zlib.crc32(last))
            self._call("put_object", Body=last, **options)
            return
        if last:
            self._send_block(last)
        self._settle()  # every part's ETag is known
        expected = _crc32_text(self._crc)
        full = {"ChecksumCRC32": expected, "ChecksumType": "FULL_OBJECT"}
        completed = self._call(
            "complete_multipart_upload",
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._parts},
            **(full if self._checksums else {}),
            **self._match,
        )
        self._upload_id = None
        self._completed = True  # from now on, abort deletes the object
        if not self._checksums:
            return
        reported = completed.get("ChecksumCRC32")
        if reported is None:  # moto reports it only when asked
            head = self._call("head_object", ChecksumMode="ENABLED")
            reported = head.get("ChecksumCRC32")
        if reported is not None and reported != expected:
            msg = (
                f"Upload to s3://{self._path} failed: checksum mismatch. The server "
                f"assembled bytes with CRC32 {reported} where {expected} was sent "
                "(damaged in transit)."
            )
            raise IntegrityError(msg)

    def _discard(self) -> None:
        upload_id, self._upload_id = self._upload_id, None
        if upload_id is not None:
            with contextlib.suppress(FileNotFoundError):  # already completed or aborted
                self._call("abort_multipart_upload", UploadId=upload_id)
        if self._completed:
            with contextlib.suppress(FileNotFoundError):
                self._call("delete_object")


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


def _error_code(error: BaseException) -> str | None:
    response = getattr(error, "response", None)  # botocore ClientError
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")  # pyright: ignore[reportUnknownMemberType]
        return code if isinstance(code, str) else None
    return None


async def _get_object(fs: Any, path: str) -> bytes:
    bucket, key, version = fs.split_path(path)
    version_option = {"VersionId": version} if version else {}
    response = await fs._call_s3("get_object", Bucket=bucket, Key=key, **version_option)
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
