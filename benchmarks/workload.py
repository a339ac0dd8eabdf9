"""What is measured: sizes, deterministic data with precomputed digests, and streams.

Digests are computed before the clock starts: in labox the caller (the serializer) hashes
the data, so hashing is no part of a storage's cost and is excluded for every contender.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from dataclasses import dataclass, replace

from labox.core.storage import Digest, StreamDigest

__all__ = [
    "FULL",
    "QUICK",
    "MiB",
    "Sizes",
    "Stream",
    "StreamSource",
    "blob",
    "digest_of",
    "small_objects",
]

KiB = 2**10
MiB = 2**20
GiB = 2**30
_POOL = 8  # distinct random chunks that streams cycle through


@dataclass(frozen=True)
class Sizes:
    """How much work each operation does, and how often it is repeated."""

    small_count: int
    small_size: int
    concurrency: int
    small_c1_count: int  # objects written one at a time (the concurrency-1 baseline)
    blob_size: int
    stream_size: int
    chunk_size: int
    rss_size: int
    repeats: int
    newloop_count: int  # 1 KiB write+read pairs per round, each in its own asyncio.run
    newloop_rounds: int  # rounds, alternating the contenders (each round a repetition)
    newloop_leak_loops: int  # new loops over which RSS, fds and sockets must not grow

    def for_backend(self, backend: str) -> Sizes:
        """fake-gcs-server's uploads cost CPU quadratic in object size: keep GCS modest."""
        if backend != "gcs":
            return self
        return replace(
            self,
            blob_size=min(self.blob_size, 16 * MiB),
            stream_size=min(self.stream_size, 64 * MiB),
            rss_size=min(self.rss_size, 256 * MiB),
        )


FULL = Sizes(
    small_count=1000,
    small_size=KiB,
    concurrency=16,
    small_c1_count=200,
    blob_size=64 * MiB,
    stream_size=256 * MiB,
    chunk_size=MiB,
    rss_size=GiB,
    repeats=3,
    newloop_count=20,
    newloop_rounds=10,
    newloop_leak_loops=1000,
)
QUICK = Sizes(
    small_count=50,
    small_size=KiB,
    concurrency=16,
    small_c1_count=10,
    blob_size=4 * MiB,
    stream_size=8 * MiB,
    chunk_size=MiB,
    rss_size=32 * MiB,
    repeats=1,
    newloop_count=10,
    newloop_rounds=1,
    newloop_leak_loops=50,
)


def digest_of(data: bytes | Iterator[bytes], size: int | None = None) -> Digest:
    """The digest labox would compute for ``data`` (bytes, or an iterator of chunks)."""
    hasher = hashlib.sha256()
    total = 0
    for chunk in [data] if isinstance(data, bytes) else data:
        hasher.update(chunk)
        total += len(chunk)
    return {
        "content_hash": hasher.hexdigest(),
        "content_hash_algorithm": "sha256",
        "content_type": "application/octet-stream",
        "content_encoding": None,
        "content_size": total if size is None else size,
    }


def small_objects(count: int, size: int, seed: int) -> list[tuple[bytes, Digest]]:
    """``count`` distinct random objects of ``size`` bytes with their digests."""
    data = random.Random(seed).randbytes(count * size)
    objects = [data[i * size : (i + 1) * size] for i in range(count)]
    return [(item, digest_of(item)) for item in objects]


def blob(size: int, seed: int) -> tuple[bytes, Digest]:
    data = random.Random(seed).randbytes(size)
    return data, digest_of(data)


class StreamSource:
    """``size`` bytes in chunks, unique per seed; ``stream()`` gives one pass over them.

    The chunks are drawn from a small pool (plus a seed-unique first chunk), so a 1 GiB
    stream costs no memory to produce; the digest is computed once, ahead of time.
    """

    def __init__(self, size: int, chunk_size: int, seed: int, digest: Digest | None = None) -> None:
        self.size = size
        self.chunk_size = chunk_size
        rng = random.Random(seed)
        self._first = rng.randbytes(chunk_size)
        self._pool = [rng.randbytes(chunk_size) for _ in range(_POOL)]
        self.digest = digest or digest_of(self.chunks(), size)

    def chunks(self) -> Iterator[bytes]:
        sent = 0
        index = 0
        while sent < self.size:
            chunk = self._first if index == 0 else self._pool[index % _POOL]
            chunk = chunk[: self.size - sent]
            sent += len(chunk)
            index += 1
            yield chunk

    def stream(self) -> Stream:
        return Stream(self)


class Stream:
    """One pass over a `StreamSource`, with labox's ``get_digest`` contract.

    It is its own async iterator, as labox's streams are: a consumer that stops iterating
    and starts again (labox's S3Storage does, once per part) continues where it stopped.
    """

    def __init__(self, source: StreamSource) -> None:
        self.source = source
        self._chunks = source.chunks()

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> bytes:
        try:
            return next(self._chunks)
        except StopIteration:
            raise StopAsyncIteration from None

    def get_digest(self, *, allow_incomplete: bool = False) -> StreamDigest:
        return StreamDigest(**self.source.digest, is_complete=True)
