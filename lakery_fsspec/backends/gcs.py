"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["GCSBackend"]


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, rewrite moves."""

    atomic_put = True
    exclusive_put = True
    needs_dirs = False
    min_block_size = 8 * 2**20  # each block is one request of a resumable upload
    min_range_size = 8 * 2**20
    block_multiple = 256 * 2**10
    loop_native = True

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
