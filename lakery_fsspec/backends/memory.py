"""fsspec's in-memory filesystem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Memory: puts are atomic dict assignments and a move re-keys the stored buffer."""

    atomic_put = True
    needs_dirs = False

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        # fsspec's mv would copy the whole buffer; re-keying it is instant and atomic.
        store: dict[str, Any] = self.fs.store
        buffer = store.pop(self.fs._strip_protocol(source))
        buffer.path = self.fs._strip_protocol(destination)
        store[buffer.path] = buffer
