"""Request bodies that aiohttp sends without its large-body warning."""

from __future__ import annotations

import io

__all__ = ["Body"]


class Body(io.BytesIO):
    """Bytes to upload, as a file object.

    aiohttp warns (``ResourceWarning: Sending a large body directly with raw bytes``) for
    every request body over 1 MiB given as bytes or a memoryview, and under
    warnings-as-errors the request fails. A file object it sends in 64 KiB pieces,
    silently. Built from ``bytes``, CPython shares the buffer until it is written to: no
    copy. Closing rewinds instead, so that a retry (gcsfs's, azure-core's) sends it again.
    """

    def close(self) -> None:
        self.seek(0)
