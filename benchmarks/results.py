"""Measurements: one operation of one contender on one backend, repeated."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["GROUPS", "OPS", "Op", "Result"]


@dataclass(frozen=True)
class Op:
    key: str
    title: str
    unit: str
    higher_is_better: bool = True


OPS = {
    op.key: op
    for op in (
        Op("small_write", "1 KiB write x{n} @{c}", "ops/s"),
        Op("small_read", "1 KiB read x{n} @{c}", "ops/s"),
        Op("small_write_c1", "1 KiB write x{n1} @1", "ops/s"),
        Op("blob_write", "{blob} blob write", "MB/s"),
        Op("blob_read", "{blob} blob read", "MB/s"),
        Op("stream_write", "{stream} stream write", "MB/s"),
        Op("stream_read", "{stream} stream read", "MB/s"),
        Op("rss_write", "peak RSS growth, {rss} stream write", "MiB", higher_is_better=False),
        Op("rss_read", "peak RSS growth, {rss} stream read", "MiB", higher_is_better=False),
        Op("newloop", "1 KiB write+read, each in a new loop (asyncio.run)", "ops/s"),
        Op("newloop_long", "1 KiB write+read, all on one loop", "ops/s"),
        Op("newloop_rss", "RSS growth over {nll} new loops", "MiB", higher_is_better=False),
        Op("newloop_fds", "open fds growth over {nll} new loops", "fds", higher_is_better=False),
        Op(
            "newloop_sockets",
            "open sockets growth over {nll} new loops",
            "sockets",
            higher_is_better=False,
        ),
    )
}
GROUPS = {
    "small": ("small_write", "small_read"),
    "small_c1": ("small_write_c1",),
    "blob": ("blob_write", "blob_read"),
    "stream": ("stream_write", "stream_read"),
    "rss": ("rss_write", "rss_read"),
    "newloop": ("newloop", "newloop_long", "newloop_rss", "newloop_fds", "newloop_sockets"),
}


@dataclass
class Result:
    backend: str
    family: str
    op: str
    values: list[float] = field(default_factory=list)
    error: str | None = None
    note: str = ""
    cpu: list[tuple[float, float]] = field(default_factory=list)
    """Per repetition: CPU seconds per wall second of this process and of the emulator."""

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def median_cpu(self) -> tuple[float, float] | None:
        if not self.cpu:
            return None
        return (
            statistics.median(c for c, _ in self.cpu),
            statistics.median(s for _, s in self.cpu),
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Result:
        data = {**data, "cpu": [tuple(pair) for pair in data.get("cpu", [])]}
        return cls(**data)
