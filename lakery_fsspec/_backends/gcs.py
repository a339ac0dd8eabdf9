"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import uuid
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.blocks import BlockWriter
from lakery_fsspec._backends.body import pieces
from lakery_fsspec._backends.clock import Aged, age, server_time
from lakery_fsspec._backends.diagnostics import Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._checksums import b64
from lakery_fsspec._errors import IntegrityError, exception_chain
from lakery_fsspec._integrity import computed

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge

__all__ = ["GCS", "GCSBackend", "GCSDiagnostics"]


def _fast_crc32c() -> Callable[[int, bytes | memoryview], int] | None:
    """google-crc32c's ``extend`` where it has its C code, else None."""
    try:
        import google_crc32c  # a dependency of gcsfs (through google-cloud-storage)
    except ImportError:
        return None
    return google_crc32c.extend if google_crc32c.implementation == "c" else None


_CRC32C = _fast_crc32c()


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, create-only
    rewrite moves.

    Uploads carry the whole object's CRC32C (MD5 without google-crc32c's C code), which
    GCS verifies before it creates the object; the checksum the server reports for what
    it stored is compared too. They are sent here rather than through gcsfs's pipe_file
    and file, which hand aiohttp bodies as bytes: above 1 MiB aiohttp warns (an error
    under -W error).
    """

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    bucketed = True
    min_block_size = 8 * 2**20  # each block is one request of a resumable upload
    min_range_size = 8 * 2**20
    block_multiple = 256 * 2**10

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        create = options.pop("mode", "overwrite") == "create"
        checksum = await computed(_Checksum.of, data)
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

    def block_writer(self, path: str, digest: Digest, block_size: int) -> BlockWriter:
        return GCSWriter(self.io, path, block_size, _resource(digest))

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

    async def list_aged(self, folder: str) -> list[Aged]:
        # An unfinished resumable upload (a writer killed mid-stream) is no object, and no
        # API lists it: it expires on its own (a week after it began).
        bucket, key, _ = self.fs.split_path(folder)
        return await self.io.run(lambda fs: _list_objects(fs, bucket, key.rstrip("/") + "/"))

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # One GET first: servers that ignore ifGenerationMatch on a rewrite (fake-gcs-server
        # up to 1.54 at least) would otherwise copy over content already stored.
        # Its size also tells a damaged object, which is replaced.
        if await self.intact(destination, digest["content_size"]):
            await self.remove(source)
            return False
        created = await self.io.run(lambda fs: _rewrite_new(fs, source, destination))
        await self.remove(source)
        return created

    async def copy_new(
        self, source: str, destination: str, digest: Digest, temp: str, *, link: bool = False
    ) -> bool | None:
        # A rewrite, create-only (the caller found nothing at ``destination`` first, for
        # servers that ignore the precondition); the source's metadata comes along.
        return await self.io.run(lambda fs: _rewrite_new(fs, source, destination))


async def _list_objects(fs: Any, bucket: str, prefix: str) -> list[Aged]:
    """Objects directly under ``prefix``, aged by the server's clock."""
    found: list[Aged] = []
    token: str | None = None
    while True:
        try:
            headers, body = await fs._call(
                "GET", "b/{}/o", bucket, prefix=prefix, delimiter="/", pageToken=token
            )
        except FileNotFoundError as error:  # a listing finds no prefix missing, only buckets
            msg = "The specified bucket does not exist"
            raise FileNotFoundError(errno.ENOENT, msg, f"{bucket}/{prefix}") from error
        now = server_time(headers.get("Date"))
        page = json.loads(body)
        for item in page.get("items", []):
            written = datetime.fromisoformat(item["updated"])
            found.append(Aged(f"{bucket}/{item['name']}", age(now, written)))
        token = page.get("nextPageToken")
        if not token:
            return found


async def _rewrite_new(fs: Any, source: str, destination: str) -> bool:
    """Rewrite (copy server-side) ``source`` to ``destination`` with ifGenerationMatch=0,
    which GCS refuses in the same request if an object is there; whether it was copied.
    The copy keeps the source's content type and encoding."""
    source_bucket, source_key, generation = fs.split_path(source)
    bucket, key, _ = fs.split_path(destination)
    token: str | None = None
    try:
        while True:
            answer = await fs._call(
                "POST",
                "b/{}/o/{}/rewriteTo/b/{}/o/{}",
                source_bucket,
                source_key,
                bucket,
                key,
                headers={"Content-Type": "application/json"},
                json_out=True,
                ifGenerationMatch="0",
                sourceGeneration=generation,
                rewriteToken=token,
            )
            if answer["done"]:
                break
            token = answer["rewriteToken"]  # large objects are copied in several calls
    except FileExistsError:  # 412 Precondition Failed
        return False
    fs.invalidate_cache(fs._parent(destination))
    return True


class GCSDiagnostics(Diagnostics):
    """GCS's words: buckets, credentials, the emulator's endpoint."""

    root_kind = "bucket"
    endpoint_option = "endpoint_url"
    credentials_hint = (
        "Pass -o token=/path/to/service-account.json, run `gcloud auth "
        "application-default login`, or -o token=anon for public data."
    )


class GCS(ProtocolSpec):
    """GCS through gcsfs, on the caller's loop, sharing credentials between loops."""

    names = ("gcs", "gs")
    filesystem = "gcsfs.core.GCSFileSystem"
    extra = "gcs"
    backend = GCSBackend
    diagnostics = GCSDiagnostics
    loop_native = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        found = options.get("endpoint_url") or os.environ.get("STORAGE_EMULATOR_HOST")
        return str(found) if found else None

    @classmethod
    def prepare_environment(cls, options: Mapping[str, Any]) -> None:
        # gcsfs >= 2026 probes bucket layouts over gRPC unless told not to at import;
        # against an emulator every call then waits for a 60 s timeout.
        if cls.endpoint(options):
            os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        # aiohttp would gunzip objects stored with Content-Encoding: gzip (and fail on
        # ranges of them); the storage must return the bytes as stored.
        session = {**options.get("session_kwargs", {}), "auto_decompress": False}
        return {**options, "session_kwargs": session}

    @classmethod
    def copy_options(cls, fs: Any) -> dict[str, Any]:
        # The copies use fs's google-auth credentials instead of finding their own: with
        # the default token that is google.auth.default() (on GCE, requests to the
        # metadata server) and a fresh access token for every new event loop. The
        # credentials refresh under a thread lock, on any loop.
        credentials = fs.credentials.credentials
        if credentials is None:  # anonymous
            return {}
        return {"token": credentials, "project": fs.credentials.project}

    @staticmethod
    async def connect(fs: Any) -> None:
        await fs._set_session()

    @staticmethod
    async def disconnect(fs: Any) -> None:
        await fs.session.close()


class GCSWriter(BlockWriter):
    """A resumable upload whose last request carries the whole object's checksum
    (``X-Goog-Hash``), which GCS verifies before it creates the object; the checksum
    the server reports for what it stored is compared too (fake-gcs-server computes it
    but verifies nothing). A stream shorter than one block is a single multipart upload
    with its checksum in the object resource. ``abort`` cancels the upload session, or
    deletes the object if it was created with a mismatching checksum."""

    hold_full_block = True  # the last full block goes with the final request

    def __init__(self, io: Bridge, path: str, block_size: int, resource: dict[str, str]) -> None:
        super().__init__(io, block_size)
        self._path = path
        fs: Any = io.fs  # gcsfs's own API
        self._bucket, key, _ = fs.split_path(path)
        self._resource = {"name": key, **resource}
        self._checksum = _Checksum()
        self._session: str | None = None
        self._offset = 0
        self._created = False

    async def _send_block(self, block: bytes) -> None:
        if self._session is None:
            resource = self._resource
            self._session = await self._run(lambda fs: _start_session(fs, self._bucket, resource))
        await computed(self._checksum.update, block)
        session, offset = self._session, self._offset
        await self._start(lambda fs: _send_chunk(fs, session, block, offset))
        self._offset += len(block)

    async def _finish(self, last: bytes) -> None:
        await computed(self._checksum.update, last)
        with _mismatch_is_integrity_error(self._path):
            if self._session is None:
                resource = {**self._resource, self._checksum.field: self._checksum.text()}
                written = await self._run(
                    lambda fs: _simple_upload(fs, self._bucket, resource, last)
                )
            else:
                header = {"X-Goog-Hash": f"{self._checksum.hash_name}={self._checksum.text()}"}
                session, offset = self._session, self._offset
                total = offset + len(last)
                written = await self._run(
                    lambda fs: _send_chunk(fs, session, last, offset, total, header)
                )
                self._session = None
        self._created = True
        if (problem := self._checksum.problem(written or {})) is not None:
            raise _mismatch(self._path, problem)

    async def _discard(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(FileNotFoundError):  # finished or expired already
                await self._run(lambda fs: fs._call("DELETE", session))  # cancels it (499)
        if self._created:
            with contextlib.suppress(FileNotFoundError):
                await self._run(lambda fs: fs._rm_file(self._path))


class _Checksum:
    """The whole-object checksum GCS verifies: CRC32C where google-crc32c has its C
    code, else MD5 (faster than CRC32C in pure Python)."""

    def __init__(self) -> None:
        self.field = "md5Hash" if _CRC32C is None else "crc32c"  # in the object resource
        self.hash_name = "md5" if _CRC32C is None else "crc32c"  # in X-Goog-Hash
        self._crc = 0
        self._md5 = hashlib.md5() if _CRC32C is None else None

    @classmethod
    def of(cls, data: bytes | memoryview) -> _Checksum:
        """The checksum of ``data``."""
        checksum = cls()
        checksum.update(data)
        return checksum

    def update(self, data: bytes | memoryview) -> None:
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
    body = pieces(head, data, f"\r\n--{boundary}--".encode(), content_type=content_type)
    precondition = {"ifGenerationMatch": "0"} if create else {}  # 412 -> FileExistsError
    written = await fs._call(
        "POST",
        _upload_url(fs, bucket),
        uploadType="multipart",
        headers={"Content-Type": content_type},
        data=body,
        json_out=True,
        **precondition,
    )
    fs.invalidate_cache(fs._parent(f"{bucket}/{resource['name']}"))
    return written


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
            data=pieces(view, content_type="application/octet-stream"),
        )
        kept = response_headers.get("Range")  # which bytes are stored: bytes=0-N
        stored = int(kept.rsplit("-", 1)[1]) + 1 if kept else 0
        if stored >= end or (total is not None and kept is None):
            # All sent are stored; after the last ones, the object's resource comes back.
            return json.loads(contents) if total is not None and contents else None
        if stored <= offset:
            msg = f"GCS kept none of a {len(view)}-byte piece of an upload (at {offset})"
            raise OSError(msg)
        view, offset = view[stored - offset :], stored


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
