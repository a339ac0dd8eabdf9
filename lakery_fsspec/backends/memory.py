"""fsspec's in-memory filesystem."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["MemoryBackend"]


class MemoryBackend(Backend):
    """Memory: dict operations that never block, so they run on the caller's loop.

    Puts are atomic dict assignments and a move re-keys the stored buffer. Reads copy
    their range out of the buffer, so concurrent readers never share a file position.
    """

    atomic_put = True
    needs_dirs = False

    async def size(self, path: str) -> int | None:
        buffer = self.fs.store.get(self.fs._strip_protocol(path))
        return None if buffer is None else buffer.getbuffer().nbytes

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return self.fs.cat_file(path, start=start, end=end)

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        self.fs.pipe_file(path, data)

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        # fsspec's mv would copy the whole buffer; re-keying it is instant and atomic.
        store: dict[str, Any] = self.fs.store
        buffer = store.pop(self.fs._strip_protocol(source))
        buffer.path = self.fs._strip_protocol(destination)
        store[buffer.path] = buffer
