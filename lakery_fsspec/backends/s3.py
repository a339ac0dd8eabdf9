"""Amazon S3 and compatible stores, through s3fs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend, cleanup

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["S3Backend"]

_MAX_PART_COPY = 5 * 2**30  # S3's limit for one UploadPartCopy (and one CopyObject)


class S3Backend(Backend):
    """S3: atomic PUTs, one-HEAD existence checks, create-only copy + delete moves,
    one-GET streams."""

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

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # The refusal below comes only after the server has copied the whole object; a
        # HEAD first saves that copy when the content is already stored.
        if await self.exists(destination):
            await self.remove(source)
            return False
        if digest["content_size"] == 0:
            created = await self._put_new(destination, b"", digest)
        else:
            created = await self._copy_new(source, destination, digest)
        await self.remove(source)
        return created

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
        """
        bucket, key, _ = self.fs.split_path(destination)
        source_bucket, source_key, version = self.fs.split_path(source)
        copy_source = {"Bucket": source_bucket, "Key": source_key}
        if version:
            copy_source["VersionId"] = version
        target = {"Bucket": bucket, "Key": key}
        options = self.write_options(digest)
        upload = await self.io.run(
            lambda fs: fs._call_s3("create_multipart_upload", **target, **options)
        )
        target["UploadId"] = upload["UploadId"]
        try:
            parts: list[dict[str, Any]] = []
            size = digest["content_size"]
            for number, start in enumerate(range(0, size, _MAX_PART_COPY), start=1):
                span = f"bytes={start}-{min(start + _MAX_PART_COPY, size) - 1}"
                part = await self.io.run(
                    lambda fs, number=number, span=span: fs._call_s3(
                        "upload_part_copy",
                        **target,
                        PartNumber=number,
                        CopySource=copy_source,
                        CopySourceRange=span,
                    )
                )
                parts.append({"PartNumber": number, "ETag": part["CopyPartResult"]["ETag"]})
            await self.io.run(
                lambda fs: fs._call_s3(
                    "complete_multipart_upload",
                    **target,
                    MultipartUpload={"Parts": parts},
                    IfNoneMatch="*",
                )
            )
        except FileExistsError:  # 412: the object was created meanwhile
            await self._abort(target)
            return False
        except BaseException as error:
            await self._abort(target)
            if _is_conflict(error) and await self.exists(destination):
                return False  # 409: a concurrent writer completed first
            raise
        return True

    async def _abort(self, upload: dict[str, Any]) -> None:
        where = f"s3://{upload['Bucket']}/{upload['Key']}"
        await cleanup(
            self.io.run(lambda fs: fs._call_s3("abort_multipart_upload", **upload)),
            f"abort the multipart copy to {where} (upload {upload['UploadId']})",
        )


def _is_conflict(error: BaseException) -> bool:
    """Whether S3 answered 409 ConditionalRequestConflict: a conditional write raced
    another write of the same key (AWS says to retry; here the other write may be ours)."""
    cause = error.__cause__
    response: Any = getattr(cause, "response", None)
    return isinstance(response, dict) and (
        response.get("Error", {}).get("Code") == "ConditionalRequestConflict"
    )


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
