"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["GCSBackend"]


class GCSBackend(Backend):
    """GCS: atomic uploads, content metadata, raw (never transcoded) reads, create-only
    rewrite moves."""

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

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # One GET first: servers that ignore ifGenerationMatch on a rewrite (fake-gcs-server
        # up to 1.54 at least) would otherwise copy over content already stored.
        if await self.exists(destination):
            await self.remove(source)
            return False
        created = await self.io.run(lambda fs: _rewrite_new(fs, source, destination))
        await self.remove(source)
        return created


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
