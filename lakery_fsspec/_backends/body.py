"""Request bodies that aiohttp sends without its large-body warning.

aiohttp warns (``ResourceWarning: Sending a large body directly with raw bytes``) for
every request body over 1 MiB given as bytes or a memoryview, and under
warnings-as-errors the request fails. Both bodies here are sent again as they are when
the client retries (gcsfs's, azure-core's).
"""

from __future__ import annotations

import functools
import io
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aiohttp.abc import AbstractStreamWriter

__all__ = ["Body", "pieces"]

_SLICE = 2**20
"""Bytes handed to aiohttp per write of a Pieces body."""


class Body(io.BytesIO):
    """Bytes to upload, as a file object, for clients that take files (the Azure SDK).

    A file object aiohttp sends in 64 KiB pieces, silently. Built from ``bytes``, CPython
    shares the buffer until it is written to: no copy. Closing rewinds instead, so that
    a retry sends it again.
    """

    def close(self) -> None:
        self.seek(0)


def pieces(*parts: bytes | memoryview, content_type: str) -> Any:
    """Bytes to upload as an aiohttp payload, for clients that hand ``data`` to aiohttp
    as is (gcsfs): several parts sent one after the other in slices, never joined or
    copied."""
    return _pieces_class()(*parts, content_type=content_type)


@functools.cache
def _pieces_class() -> Any:
    # aiohttp comes with gcsfs, not with lakery-fsspec: imported on the first GCS upload.
    from aiohttp.payload import Payload

    class Pieces(Payload):
        def __init__(self, *parts: bytes | memoryview, content_type: str) -> None:
            super().__init__(parts, content_type=content_type)
            self._parts = parts
            self._size = sum(len(part) for part in parts)

        def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
            return b"".join(self._parts).decode(encoding, errors)

        async def write(self, writer: AbstractStreamWriter) -> None:
            for part in self._parts:
                view = memoryview(part)
                for start in range(0, len(view), _SLICE):
                    await writer.write(view[start : start + _SLICE])

    return Pieces
