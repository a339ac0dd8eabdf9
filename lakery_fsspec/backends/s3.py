"""Amazon S3 and compatible stores, through s3fs."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar

from lakery_fsspec.backends.base import Backend
from lakery_fsspec.backends.clock import Aged, Upload, age, server_time
from lakery_fsspec.errors import exception_chain

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["S3Backend"]

_MAX_COPY_OBJECT = 5 * 2**30  # S3's limit for a single CopyObject


class S3Backend(Backend):
    """S3: atomic PUTs, one-HEAD existence checks, copy + delete moves, one-GET streams."""

    protocols = ("s3", "s3a")
    extra = "s3"
    root_kind = "bucket"
    endpoint_option = "endpoint_url"
    credentials_hint = (
        "Pass -o key=ACCESS_KEY -o secret=SECRET_KEY, or set AWS_ACCESS_KEY_ID and "
        "AWS_SECRET_ACCESS_KEY (or -o profile=NAME; -o anon=true for a public bucket)."
    )
    operations: ClassVar[dict[str, str]] = {
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
    """S3 operation (as botocore names it in errors) -> what the user was doing."""
    permissions: ClassVar[dict[str, str]] = {
        "write": "s3:PutObject",
        "move": "s3:GetObject and s3:PutObject",
        "delete": "s3:DeleteObject",
        "read": "s3:GetObject",
        "list": "s3:ListBucket",
    }
    """What the user was doing -> the IAM actions that allow it."""

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 5 * 2**20
    loop_native = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        client_kwargs = options.get("client_kwargs")
        nested = client_kwargs.get("endpoint_url") if isinstance(client_kwargs, dict) else None
        found = options.get("endpoint_url") or nested
        found = found or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        return str(found) if found else None

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        # One attempt per request (s3fs still retries a few times itself).
        config = dict(options.get("config_kwargs") or {})
        config.setdefault("connect_timeout", min(timeout, 5.0))
        config.setdefault("retries", {"max_attempts": 1})
        return {**options, "config_kwargs": config}

    @staticmethod
    async def connect(fs: Any) -> None:
        await fs.set_session()

    @staticmethod
    async def disconnect(fs: Any) -> None:
        if fs._s3 is not None:
            await fs._s3creator.__aexit__(None, None, None)

    async def root_missing(self, root: str, error: FileNotFoundError) -> bool:
        # S3 names the missing bucket in the error (probing it would need more rights).
        return any(_error_code(item) == "NoSuchBucket" for item in exception_chain(error))

    def write_options(self, digest: Digest) -> dict[str, Any]:
        options = {"ContentType": digest["content_type"]}
        if digest["content_encoding"]:
            options["ContentEncoding"] = digest["content_encoding"]
        return options

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
                lambda fs: fs._call_s3(
                    "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload_id
                )
            )


async def _list_objects(fs: Any, bucket: str, prefix: str) -> list[Aged]:
    """Objects directly under ``prefix``, aged by the server's clock."""
    found: list[Aged] = []
    page: dict[str, Any] = {"IsTruncated": True}
    while page.get("IsTruncated"):
        token = page.get("NextContinuationToken")
        more = {"ContinuationToken": token} if token else {}
        page = await fs._call_s3(
            "list_objects_v2", Bucket=bucket, Prefix=prefix, Delimiter="/", **more
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
        page = await fs._call_s3(
            "list_multipart_uploads", Bucket=bucket, Prefix=prefix, Delimiter="/", **more
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
            page = await fs._call_s3(
                "list_parts", Bucket=bucket, Key=upload["Key"], UploadId=upload["UploadId"], **more
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
