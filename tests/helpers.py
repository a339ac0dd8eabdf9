"""Digests, streams and listings shared by the contract tests."""

from __future__ import annotations

import hashlib
import os
import pty
import subprocess
from collections.abc import AsyncIterator, Iterable
from typing import Any

from labox.core.storage import Digest, StreamDigest

from lakery_fsspec import FsspecStorage

CHUNK = 64 * 1024
"""chunk_size of the storages under test: small, so that streams span many chunks."""


def digest_of(
    data: bytes, content_type: str = "application/octet-stream", encoding: str | None = None
) -> Digest:
    """The digest labox would compute for ``data``."""
    return {
        "content_hash": hashlib.sha256(data).hexdigest(),
        "content_hash_algorithm": "sha256",
        "content_type": content_type,
        "content_encoding": encoding,
        "content_size": len(data),
    }


class Stream:
    """An async byte stream with labox's ``get_digest`` contract, hashing as it goes."""

    def __init__(
        self,
        chunks: Iterable[bytes],
        content_type: str = "application/octet-stream",
        encoding: str | None = None,
        fail_after: int | None = None,
    ) -> None:
        self._chunks = list(chunks)
        self._hash = hashlib.sha256()
        self._size = 0
        self._done = False
        self._content_type = content_type
        self._encoding = encoding
        self._fail_after = fail_after

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for index, chunk in enumerate(self._chunks):
            if index == self._fail_after:
                raise StreamBroke(f"stream broke after {index} chunks")
            self._hash.update(chunk)
            self._size += len(chunk)
            yield chunk
        self._done = True

    def get_digest(self, *, allow_incomplete: bool = False) -> StreamDigest:
        if not (self._done or allow_incomplete):
            raise ValueError("stream not finished")
        return {
            "content_hash": self._hash.hexdigest(),
            "content_hash_algorithm": "sha256",
            "content_type": self._content_type,
            "content_encoding": self._encoding,
            "content_size": self._size,
            "is_complete": self._done,
        }


class StreamBroke(Exception):
    """Raised by a Stream told to fail midway."""


def chunked(data: bytes, size: int) -> list[bytes]:
    """``data`` cut into pieces of ``size`` bytes (none for empty data)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def payload(size: int, seed: int = 0) -> bytes:
    """Deterministic, incompressible-looking bytes."""
    block = hashlib.sha256(f"{seed}".encode()).digest() * 32
    return (block * (size // len(block) + 1))[:size]


async def write(storage: FsspecStorage, data: bytes, how: str, **digest: Any) -> Any:
    """Write through ``write_data`` ("blob") or ``write_data_stream`` ("stream")."""
    if how == "blob":
        return await storage.write_data(data, digest_of(data, **digest), {})
    stream = Stream(chunked(data, 10_000), **digest)
    return await storage.write_data_stream(stream, stream.get_digest, {})


async def read(storage: FsspecStorage, pointer: Any, how: str) -> bytes:
    """Read through ``read_data`` ("blob") or ``read_data_stream`` ("stream")."""
    if how == "blob":
        return await storage.read_data(pointer)
    chunks = [chunk async for chunk in storage.read_data_stream(pointer)]
    assert all(0 < len(chunk) <= storage.chunk_size for chunk in chunks)
    return b"".join(chunks)


def on_a_terminal(command: list[str], timeout: float = 60) -> tuple[int, bytes, bytes]:
    """Run ``command`` with its standard error on a pseudo-terminal (where progress bars
    show); its exit status, standard output, and what it wrote on the terminal."""
    master, slave = pty.openpty()
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=slave, stdin=subprocess.DEVNULL
    )
    os.close(slave)
    seen = b""
    while True:
        try:
            chunk = os.read(master, 65536)
        except OSError:  # the terminal closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(master)
    assert process.stdout is not None
    with process.stdout:
        output = process.stdout.read()
    return process.wait(timeout=timeout), output, seen
