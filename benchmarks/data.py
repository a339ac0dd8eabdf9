"""The data of each repetition, built once and shared by every contender and backend."""

from __future__ import annotations

import functools

from labox.core.storage import Digest

from benchmarks.workload import Sizes, StreamSource, blob, small_objects

__all__ = ["Data"]


class Data:
    """Objects for repetition ``rep``; the same bytes for every contender."""

    def __init__(self, sizes: Sizes) -> None:
        self.sizes = sizes

    @functools.cache  # noqa: B019 - one Data per run
    def small(self, rep: int, count: int) -> list[tuple[bytes, Digest]]:
        return small_objects(count, self.sizes.small_size, seed=1000 + rep * 7 + count)

    @functools.cache  # noqa: B019
    def blob(self, rep: int, size: int) -> tuple[bytes, Digest]:
        return blob(size, seed=2000 + rep)

    @functools.cache  # noqa: B019
    def stream(self, rep: int, size: int) -> StreamSource:
        return StreamSource(size, self.sizes.chunk_size, seed=3000 + rep)
