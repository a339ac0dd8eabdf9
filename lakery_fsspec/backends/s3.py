"""Amazon S3 and compatible stores, through s3fs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["S3Backend"]


class S3Backend(Backend):
    """S3: atomic PUTs, ContentType/ContentEncoding metadata, copy + delete moves."""

    atomic_put = True
    needs_dirs = False
    min_block_size = 5 * 2**20

    def put_options(self, digest: Digest) -> dict[str, Any]:
        options = {"ContentType": digest["content_type"]}
        if digest["content_encoding"]:
            options["ContentEncoding"] = digest["content_encoding"]
        return options

    async def move(self, source: str, destination: str) -> None:
        # Metadata is passed along because the multipart copy s3fs uses for large
        # objects would otherwise reset the content type.
        await self.io.call("cp_file", source, destination)
        await self.remove(source)
