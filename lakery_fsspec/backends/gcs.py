"""Google Cloud Storage, through gcsfs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["GCSBackend"]


class GCSBackend(Backend):
    """GCS: atomic uploads, content type metadata, rewrite + delete moves."""

    atomic_put = True
    needs_dirs = False
    block_multiple = 256 * 2**10

    def put_options(self, digest: Digest) -> dict[str, Any]:
        return {"content_type": digest["content_type"]}

    async def move(self, source: str, destination: str) -> None:
        await self.io.call("cp_file", source, destination)
        await self.remove(source)
