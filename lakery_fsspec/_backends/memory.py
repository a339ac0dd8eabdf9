"""fsspec's in-memory filesystem."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.clock import Aged, age
from lakery_fsspec._backends.spec import ProtocolSpec

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["Memory", "MemoryBackend"]


class MemoryBackend(Backend):
    """Memory: dict operations that never block, so they run on the caller's loop.

    Puts are atomic dict assignments and a move re-keys the stored buffer unless the
    destination is taken. Reads slice the stored bytes, so concurrent readers never
    share a file position.
    """

    atomic_put = True
    needs_dirs = False
    process_local = True

    async def size(self, path: str) -> int | None:
        value = self._value(path)
        return None if value is None else len(value)

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        value = self._value(path)
        if value is None:
            raise FileNotFoundError(path)
        return value if start is None and end is None else value[start:end]

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        self.fs.pipe_file(path, data)

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        # fsspec's mv would copy the whole buffer; re-keying it is instant, and setdefault
        # refuses to replace an object already there (atomic under the GIL).
        store: dict[str, Any] = self.fs.store
        buffer = store.pop(self.fs._strip_protocol(source))
        buffer.path = self.fs._strip_protocol(destination)
        if store.setdefault(buffer.path, buffer) is buffer:
            return True
        if await self.intact(destination, digest["content_size"]):
            return False
        return store.setdefault(buffer.path, buffer) is buffer  # the damaged one is gone

    async def list_aged(self, folder: str) -> list[Aged]:
        # Files are stamped when opened and when committed; this process's clock is the
        # server's.
        prefix = self.fs._strip_protocol(folder).rstrip("/") + "/"
        store: dict[str, Any] = self.fs.store
        now = time.time()
        return [
            Aged(path, age(now, file.modified))
            for path, file in list(store.items())
            if path.startswith(prefix) and "/" not in path[len(prefix) :]
        ]

    def _value(self, path: str) -> bytes | None:
        # getvalue() hands out the stored bytes without copying them (CPython's BytesIO
        # shares its buffer), where getbuffer() and fsspec's cat_file copy the object.
        buffer = self.fs.store.get(self.fs._strip_protocol(path))
        return None if buffer is None else buffer.getvalue()


class Memory(ProtocolSpec):
    """fsspec's in-memory filesystem."""

    names = ("memory",)
    filesystem = "fsspec.implementations.memory.MemoryFileSystem"
    backend = MemoryBackend
