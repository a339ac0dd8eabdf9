"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from fsspec.asyn import sync

from lakery_fsspec.backends.base import Backend
from lakery_fsspec.backends.body import Body
from lakery_fsspec.backends.clock import Aged, age, server_time

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec.backends.base import Writer

__all__ = ["GCSBackend"]


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, create-only
    rewrite moves.

    Uploads are sent here rather than through gcsfs's pipe_file and file, which hand
    aiohttp bodies as bytes: above 1 MiB aiohttp warns (an error under -W error).
    """

    protocols = ("gcs", "gs")
    extra = "gcs"
    root_kind = "bucket"
    endpoint_option = "endpoint_url"
    credentials_hint = (
        "Pass -o token=/path/to/service-account.json, run `gcloud auth "
        "application-default login`, or -o token=anon for public data."
    )
    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 8 * 2**20  # each block is one request of a resumable upload
    min_range_size = 8 * 2**20
    block_multiple = 256 * 2**10
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

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        # aiohttp would gunzip objects stored with Content-Encoding: gzip (and fail on
        # ranges of them); the storage must return the bytes as stored.
        session = {**options.get("session_kwargs", {}), "auto_decompress": False}
        return {**options, "session_kwargs": session}

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        create = options.get("mode") == "create"
        await self.io.run(lambda fs: _upload(fs, path, data, digest, create))

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return _ResumableWriter(self.fs, path, digest, block_size)

    def write_options(self, digest: Digest) -> dict[str, Any]:
        options: dict[str, Any] = {"content_type": digest["content_type"]}
        if digest["content_encoding"]:
            options["fixed_key_metadata"] = {"content_encoding": digest["content_encoding"]}
        return options

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
        if await self.exists(destination):
            await self.remove(source)
            return False
        created = await self.io.run(lambda fs: _rewrite_new(fs, source, destination))
        await self.remove(source)
        return created


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


async def _upload(fs: Any, path: str, data: bytes, digest: Digest, create: bool) -> None:
    """One multipart upload (the object's JSON metadata, then its bytes), the request
    gcsfs's pipe_file sends below 50 MiB, here at any size (the bytes are in memory
    already); ``create``: FileExistsError if an object is there."""
    bucket, key, _ = fs.split_path(path)
    boundary = uuid.uuid4().hex  # random: unlike a fixed one, no data can be made to hold it
    metadata = json.dumps({"name": key, **_fixed_metadata(digest)})
    head = (
        f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{metadata}\r\n"
        f"--{boundary}\r\nContent-Type: {digest['content_type']}\r\n\r\n"
    )
    body = b"".join((head.encode(), data, f"\r\n--{boundary}--\r\n".encode()))
    await fs._call(
        "POST",
        f"{fs._location}/upload/storage/v1/b/{quote(bucket)}/o",
        uploadType="multipart",
        headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
        data=Body(body),
        json_out=True,
        ifGenerationMatch="0" if create else None,  # 412 -> FileExistsError
    )
    fs.invalidate_cache(fs._parent(path))


def _fixed_metadata(digest: Digest) -> dict[str, str]:
    encoding = digest["content_encoding"]
    return {"contentEncoding": encoding} if encoding else {}


class _ResumableWriter:
    """A resumable upload fed block by block, as gcsfs's file does (blocking: the storage
    calls it from a worker thread; requests run on the filesystem's own loop)."""

    def __init__(self, fs: Any, path: str, digest: Digest, block_size: int) -> None:
        from gcsfs.core import initiate_upload

        self._fs = fs
        self._path = path
        self._block_size = block_size  # a multiple of 256 KiB, as GCS needs but last
        self._content_type = digest["content_type"]
        bucket, key, _ = fs.split_path(path)
        encoding = digest["content_encoding"]
        fixed = {"content_encoding": encoding} if encoding else None
        self._location = str(
            sync(fs.loop, initiate_upload, fs, bucket, key, self._content_type, None, fixed)
        )
        self._buffer = bytearray()
        self._offset = 0

    def write(self, data: bytes | memoryview, /) -> None:
        self._buffer += data
        # Strictly more than a block: the last one goes with commit, in the final request.
        while len(self._buffer) > self._block_size:
            self._send(self._block_size, final=False)

    def commit(self) -> None:
        self._send(len(self._buffer), final=True)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._fs.call("DELETE", self._location)  # cancels the upload session
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._path)

    def _send(self, size: int, *, final: bool) -> None:
        """Send the first ``size`` buffered bytes; GCS may keep fewer of a non-final
        piece (its Range header says how many), and the rest is sent again."""
        total = str(self._offset + len(self._buffer)) if final else "*"
        span = f"{self._offset}-{self._offset + size - 1}" if size else "*"
        headers = {"Content-Range": f"bytes {span}/{total}", "Content-Type": self._content_type}
        piece = bytes(self._buffer[:size])
        answer, _ = self._fs.call("POST", self._location, headers=headers, data=Body(piece))
        kept = size
        if not final:
            kept = int(answer["Range"].split("-")[1]) + 1 - self._offset if "Range" in answer else 0
            if kept <= 0:
                msg = f"GCS kept none of a {size}-byte piece of the upload to {self._path}"
                raise OSError(msg)
        del self._buffer[:kept]
        self._offset += kept
