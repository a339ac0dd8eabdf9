"""Checksums that uploads carry, so that the service rejects a body damaged in transit."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge

__all__ = ["INLINE_SIZE", "b64", "computed", "digest_sha256", "sha256"]

T = TypeVar("T")

INLINE_SIZE = 256 * 2**10
"""Bytes hashed on the caller's loop; more go to a worker thread (a hop costs about as
much as hashing this much, and the loop must never stall on a large body)."""

_HEX_SHA256 = re.compile(r"[0-9a-fA-F]{64}")


def b64(raw: bytes) -> str:
    """The base64 text HTTP checksum headers carry."""
    return base64.b64encode(raw).decode("ascii")


def sha256(data: bytes | bytearray | memoryview) -> bytes:
    """The raw SHA-256 of ``data``."""
    return hashlib.sha256(data).digest()


def digest_sha256(digest: Digest) -> bytes | None:
    """The raw SHA-256 a digest records, or None if it records another algorithm (or a
    malformed hash): then the caller hashes the data itself."""
    algorithm = str(digest.get("content_hash_algorithm") or "").lower().replace("-", "")
    content_hash = str(digest.get("content_hash") or "")
    if algorithm != "sha256" or not _HEX_SHA256.fullmatch(content_hash):
        return None
    return bytes.fromhex(content_hash)


async def computed(
    bridge: Bridge, function: Callable[[bytes | memoryview], T], data: bytes | memoryview
) -> T:
    """``function(data)``: on the caller's loop for small data, else in a worker thread."""
    if len(data) <= INLINE_SIZE:
        return function(data)
    return await bridge.thread(partial(function, data))
