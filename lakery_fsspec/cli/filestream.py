"""A local file (or stdin) as the byte stream labox hands to ``write_data_stream``."""

from __future__ import annotations

import hashlib
import mimetypes
from collections.abc import AsyncIterator, Callable
from typing import Protocol

from anyio import to_thread
from labox.core.storage import StreamDigest

__all__ = ["FileStream", "Readable", "guess_content_type"]

READ_SIZE = 2**20
"""Bytes read from the file at a time."""

# A compressed file is stored as what it is: a .tar.gz is an application/gzip object.
_COMPRESSED = {
    "gzip": "application/gzip",
    "bzip2": "application/x-bzip2",
    "xz": "application/x-xz",
    "br": "application/x-brotli",
    "compress": "application/x-compress",
}


def guess_content_type(name: str) -> str:
    """The content type for a file name, ``application/octet-stream`` when unknown."""
    content_type, encoding = mimetypes.guess_type(name, strict=False)
    if encoding:
        return _COMPRESSED.get(encoding, "application/octet-stream")
    return content_type or "application/octet-stream"


class Readable(Protocol):
    """Anything with a binary ``read(size)``: an open file, ``sys.stdin.buffer``, …."""

    def read(self, size: int = -1, /) -> bytes:
        """Up to ``size`` bytes; ``b""`` at the end."""
        ...


class FileStream:
    """Reads a binary file chunk by chunk, hashing as it goes (labox's ``GetStreamDigest``).

    Memory stays at one read of ``read_size`` bytes whatever the file's size; reads run
    in a worker thread so the event loop keeps moving. ``on_chunk(size)`` is called after
    each read, ``on_end()`` once the file is exhausted.
    """

    def __init__(
        self,
        file: Readable,
        *,
        content_type: str = "application/octet-stream",
        read_size: int = READ_SIZE,
        on_chunk: Callable[[int], object] | None = None,
        on_end: Callable[[], object] | None = None,
    ) -> None:
        self._file = file
        self._content_type = content_type
        self._read_size = read_size
        self._on_chunk = on_chunk
        self._on_end = on_end
        self._hash = hashlib.sha256()
        self._size = 0
        self._complete = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while chunk := await to_thread.run_sync(self._file.read, self._read_size):
            self._hash.update(chunk)
            self._size += len(chunk)
            if self._on_chunk is not None:
                self._on_chunk(len(chunk))
            yield chunk
        self._complete = True
        if self._on_end is not None:
            self._on_end()

    def get_digest(self, *, allow_incomplete: bool = False) -> StreamDigest:
        """The digest of what was read so far; ValueError before the end unless allowed."""
        if not (self._complete or allow_incomplete):
            msg = "The file has not been read to its end yet."
            raise ValueError(msg)
        return {
            "content_hash": self._hash.hexdigest(),
            "content_hash_algorithm": "sha256",
            "content_type": self._content_type,
            "content_encoding": None,
            "content_size": self._size,
            "is_complete": self._complete,
        }
