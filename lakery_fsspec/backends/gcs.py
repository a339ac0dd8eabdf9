"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

import contextlib
import hashlib
import json
import uuid
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from aiohttp.abc import AbstractStreamWriter
from aiohttp.payload import Payload

from lakery_fsspec.backends.base import Backend, Writer
from lakery_fsspec.backends.blocks import BlockWriter
from lakery_fsspec.checksums import b64, computed
from lakery_fsspec.errors import IntegrityError, exception_chain

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["GCSBackend"]


def _fast_crc32c() -> Callable[[int, bytes], int] | None:
    """google-crc32c's ``extend`` where it has its C code (several GB/s), else None."""
    try:
        import google_crc32c  # a dependency of gcsfs (through google-cloud-storage)
    except ImportError:
        return None
    return google_crc32c.extend if google_crc32c.implementation == "c" else None


_CRC32C = _fast_crc32c()

_SLICE = 2**20
"""Bytes handed to aiohttp per write of a request body."""


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, rewrite moves."""

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 8 * 2**20  # each block is one request of a resumable upload
    min_range_size = 8 * 2**20
    block_multiple = 256 * 2**10
    loop_native = True

    @staticmethod
    async def connect(fs: Any) -> None:
        await fs._set_session()

    @staticmethod
    async def disconnect(fs: Any) -> None:
        await fs.session.close()

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        # aiohttp would gunzip objects stored with Content-Encoding: gzip (and fail on
        # ranges of them); the storage must return the bytes as stored.
        session = {**options.get("session_kwargs", {}), "auto_decompress": False}
        return {**options, "session_kwargs": session}

    def write_options(self, digest: Digest) -> dict[str, Any]:
        options: dict[str, Any] = {"content_type": digest["content_type"]}
        if digest["content_encoding"]:
            options["fixed_key_metadata"] = {"content_encoding": digest["content_encoding"]}
        return options

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        create = options.pop("mode", "overwrite") == "create"
        checksum = await computed(self.io, _Checksum.of, data)
        bucket, key, _ = self.fs.split_path(path)
        resource = {"name": key, **_resource(digest), checksum.field: checksum.text()}
        with _mismatch_is_integrity_error(path):
            written = await self.io.run(
                lambda fs: _simple_upload(fs, bucket, resource, data, create=create)
            )
        if (problem := checksum.problem(written)) is not None:
            # The server stored what it received without checking: delete it (only this
            # very generation, never a later writer's object) before saying so.
            generation = written.get("generation")
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                await self.io.run(
                    lambda fs: fs._call(
                        "DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=generation
                    )
                )
            raise _mismatch(path, problem)

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return GCSWriter(self.fs, path, block_size, _resource(digest))

    async def size(self, path: str) -> int | None:
        # gcsfs's info() also lists the parent; one object GET is enough.
        bucket, key, _ = self.fs.split_path(path)
        try:
            meta = await self.io.run(
                lambda fs: fs._call("GET", "b/{}/o/{}", bucket, key, json_out=True)
            )
        except FileNotFoundError:
            return None
        return int(meta["size"])


class GCSWriter(BlockWriter):
    """A resumable upload whose last request carries the whole object's checksum
    (``X-Goog-Hash``), which GCS verifies before it creates the object; the checksum
    the server reports for what it stored is compared too (fake-gcs-server computes it
    but verifies nothing). A stream shorter than one block is a single multipart upload
    with its checksum in the object resource. ``abort`` cancels the upload session, or
    deletes the object if it was created with a mismatching checksum."""

    def __init__(self, fs: Any, path: str, block_size: int, resource: dict[str, str]) -> None:
        super().__init__(fs, block_size)
        self._path = path
        self._bucket, key, _ = fs.split_path(path)
        self._resource = {"name": key, **resource}
        self._checksum = _Checksum()
        self._session: str | None = None
        self._offset = 0
        self._created = False

    def _send_block(self, block: bytes) -> None:
        if self._session is None:
            self._session = self._run(_start_session, self._fs, self._bucket, self._resource)
        self._checksum.update(block)
        self._start(_send_chunk, self._fs, self._session, block, self._offset)
        self._offset += len(block)

    def _finish(self, last: bytes) -> None:
        self._checksum.update(last)
        with _mismatch_is_integrity_error(self._path):
            if self._session is None:
                resource = {**self._resource, self._checksum.field: self._checksum.text()}
                written = self._run(_simple_upload, self._fs, self._bucket, resource, last)
            else:
                header = {"X-Goog-Hash": f"{self._checksum.hash_name}={self._checksum.text()}"}
                total = self._offset + len(last)
                written = self._run(
                    _send_chunk, self._fs, self._session, last, self._offset, total, header
                )
                self._session = None
        self._created = True
        if (problem := self._checksum.problem(written or {})) is not None:
            raise _mismatch(self._path, problem)

    def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(FileNotFoundError):  # finished or expired already
                self._run(self._fs._call, "DELETE", session)  # cancels the upload (499)
        if self._created:
            with contextlib.suppress(FileNotFoundError):
                self._run(self._fs._rm_file, self._path)


class _Checksum:
    """The whole-object checksum GCS verifies: CRC32C where google-crc32c has its C
    code (several GB/s), else MD5 (hashlib, about 0.4 GB/s)."""

    def __init__(self) -> None:
        self.field = "md5Hash" if _CRC32C is None else "crc32c"  # in the object resource
        self.hash_name = "md5" if _CRC32C is None else "crc32c"  # in X-Goog-Hash
        self._crc = 0
        self._md5 = hashlib.md5() if _CRC32C is None else None

    @classmethod
    def of(cls, data: bytes) -> _Checksum:
        """The checksum of ``data``."""
        checksum = cls()
        checksum.update(data)
        return checksum

    def update(self, data: bytes) -> None:
        """Account for the next bytes."""
        if _CRC32C is None:
            assert self._md5 is not None
            self._md5.update(data)
        else:
            self._crc = _CRC32C(self._crc, data)

    def text(self) -> str:
        """Base64 of the checksum's big-endian bytes, as GCS writes it."""
        if self._md5 is not None:
            return b64(self._md5.digest())
        return b64(self._crc.to_bytes(4, "big"))

    def problem(self, written: dict[str, Any]) -> str | None:
        """What differs between the checksum the server reports for an object and ours."""
        reported = written.get(self.field)
        if reported is None or reported == self.text():
            return None
        return (
            f"the server stored bytes with {self.hash_name} {reported} where {self.text()} was sent"
        )


class _Body(Payload):
    """A request body sent from memory in slices, never joined or copied, and sent again
    as is when the client retries (aiohttp would warn about large raw bytes)."""

    def __init__(self, *pieces: bytes | memoryview, content_type: str) -> None:
        super().__init__(pieces, content_type=content_type)
        self._pieces = pieces
        self._size = sum(len(piece) for piece in pieces)

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return b"".join(self._pieces).decode(encoding, errors)

    async def write(self, writer: AbstractStreamWriter) -> None:
        for piece in self._pieces:
            view = memoryview(piece)
            for start in range(0, len(view), _SLICE):
                await writer.write(view[start : start + _SLICE])


def _resource(digest: Digest) -> dict[str, str]:
    """The object resource fields for the digest's content type and encoding."""
    resource = {"contentType": digest["content_type"]}
    if digest["content_encoding"]:
        resource["contentEncoding"] = digest["content_encoding"]
    return resource


def _upload_url(fs: Any, bucket: str) -> str:
    return f"{fs._location}/upload/storage/v1/b/{quote(bucket, safe='')}/o"


async def _simple_upload(
    fs: Any, bucket: str, resource: dict[str, str], data: bytes, create: bool = False
) -> dict[str, Any]:
    """One multipart upload (object resource, then the bytes); the created resource."""
    boundary = uuid.uuid4().hex  # never in the JSON; in the data with odds of 2**-122
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n"
        f"{json.dumps(resource)}\r\n--{boundary}\r\n"
        f"Content-Type: {resource['contentType']}\r\n\r\n"
    ).encode()
    content_type = f'multipart/related; boundary="{boundary}"'
    body = _Body(head, data, f"\r\n--{boundary}--".encode(), content_type=content_type)
    precondition = {"ifGenerationMatch": "0"} if create else {}
    return await fs._call(
        "POST",
        _upload_url(fs, bucket),
        uploadType="multipart",
        headers={"Content-Type": content_type},
        data=body,
        json_out=True,
        **precondition,
    )


async def _start_session(fs: Any, bucket: str, resource: dict[str, str]) -> str:
    """Start a resumable upload; its session URL."""
    headers, _ = await fs._call(
        "POST",
        _upload_url(fs, bucket),
        uploadType="resumable",
        json=resource,
        headers={"X-Upload-Content-Type": resource["contentType"]},
    )
    return str(headers["Location"])


async def _send_chunk(
    fs: Any,
    session: str,
    data: bytes,
    offset: int,
    total: int | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any] | None:
    """Send the bytes at ``offset`` of a resumable upload, the last ones if ``total`` is
    given (then the created resource is returned). Bytes the server did not keep (it may
    keep fewer than it was sent) are sent again."""
    view = memoryview(data)
    size = "*" if total is None else str(total)
    while True:
        end = offset + len(view)
        span = f"{offset}-{end - 1}" if len(view) else "*"
        response_headers, contents = await fs._call(
            "PUT",
            session,
            headers={"Content-Range": f"bytes {span}/{size}", **(headers or {})},
            data=_Body(view, content_type="application/octet-stream"),
        )
        kept = response_headers.get("Range")  # 308: bytes=0-N are stored
        if kept is not None and (stored := int(kept.rsplit("-", 1)[1]) + 1) < end:
            view, offset = view[stored - offset :], stored
            continue
        return json.loads(contents) if total is not None and contents else None


def _mismatch(path: str, problem: str) -> IntegrityError:
    return IntegrityError(
        f"Upload to gcs://{path} failed: checksum mismatch ({problem}: damaged in "
        "transit); nothing was kept."
    )


@contextlib.contextmanager
def _mismatch_is_integrity_error(path: str) -> Generator[None]:
    """Raise IntegrityError where GCS refused a body that does not match its checksum
    (HTTP 400, "Provided CRC32C ... doesn't match calculated CRC32C ...")."""
    try:
        yield
    except Exception as error:
        for item in exception_chain(error):
            message = str(getattr(item, "message", item)).lower()
            if (
                getattr(item, "code", None) == 400
                and "match" in message
                and ("crc32c" in message or "md5" in message)
            ):
                raise IntegrityError(
                    f"Upload to gcs://{path} failed: checksum mismatch (GCS refused the "
                    "body: it does not match the checksum sent with it; damaged in "
                    "transit); nothing was stored."
                ) from error
        raise
