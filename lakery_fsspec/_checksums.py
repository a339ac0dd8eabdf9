"""Checksums that uploads carry, so that the service rejects a body damaged in transit."""

from __future__ import annotations

import base64
import hashlib
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["b64", "digest_sha256", "sha256"]

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
