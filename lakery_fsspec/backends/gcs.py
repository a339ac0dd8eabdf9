"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

import errno
import json
import os
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend
from lakery_fsspec.backends.clock import Aged, age, server_time

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["GCSBackend"]


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, rewrite moves."""

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
