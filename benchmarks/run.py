"""Drive the measurements: every selected operation, contender and backend, with progress."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from benchmarks import newloop
from benchmarks.contenders import FAMILIES, Contender, Family
from benchmarks.contenders.base import cleanup_fs
from benchmarks.data import Data
from benchmarks.envs import Env, cpu_seconds
from benchmarks.results import GROUPS, OPS, Result
from benchmarks.rss import measure_in_subprocess
from benchmarks.timing import consume, read_many, write_many
from benchmarks.workload import Sizes

__all__ = ["RSS_FAMILIES", "Progress", "run_backend"]

RSS_FAMILIES = ("fsspec_storage", "raw_fsspec", "native", "physical")
"""Whose peak RSS is measured: each 1 GiB stream takes a minute on moto and Azurite."""


class Progress:
    """One line per measurement on stderr, with the time since the start."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def say(self, text: str) -> None:
        elapsed = int(time.monotonic() - self.started)
        print(f"[{elapsed // 60:3d}:{elapsed % 60:02d}] {text}", file=sys.stderr, flush=True)


class _Recorder:
    """Collects the values of one family on one backend."""

    def __init__(self, env: Env, family: type[Family], progress: Progress) -> None:
        self.env = env
        self.family = family
        self.progress = progress
        self.results: dict[str, Result] = {}
        self._cpu: tuple[float, float] | None = None
        self._cpu_start = (0.0, 0.0)

    async def clock(self, work: Awaitable[Any], limit: float) -> tuple[float, Any]:
        """Seconds ``work`` took (and its result); remembers the CPU both sides used."""
        cpu = self._cpu_now()
        started = time.perf_counter()
        result = await asyncio.wait_for(work, limit)
        seconds = time.perf_counter() - started
        self._cpu_since(cpu, seconds)
        return seconds, result

    def start_cpu(self) -> None:
        """Start counting CPU for a step that times itself (see ``stop_cpu``)."""
        self._cpu_start = self._cpu_now()

    def stop_cpu(self, seconds: float) -> None:
        """Remember the CPU used since ``start_cpu``, over the step's ``seconds``."""
        self._cpu_since(self._cpu_start, seconds)

    def _cpu_now(self) -> tuple[float, float]:
        return time.process_time(), cpu_seconds(self.env.server_pid)

    def _cpu_since(self, start: tuple[float, float], seconds: float) -> None:
        client, server = start
        self._cpu = (
            (time.process_time() - client) / seconds,
            (cpu_seconds(self.env.server_pid) - server) / seconds,
        )

    def result(self, op: str) -> Result:
        if op not in self.results:
            self.results[op] = Result(self.env.backend, self.family.key, op)
        return self.results[op]

    def add(self, op: str, rep: int, value: float) -> None:
        result = self.result(op)
        result.values.append(value)
        label = f"{self.env.backend} · {self.family.label} · {op} #{rep + 1}"
        cpu = ""
        if self._cpu is not None:
            result.cpu.append(self._cpu)
            cpu = f" (CPU: client {self._cpu[0]:.0%}"
            cpu += f", server {self._cpu[1]:.0%})" if self.env.server_pid else ")"
            self._cpu = None
        self.progress.say(f"{label}: {value:,.1f} {OPS[op].unit}{cpu}")

    def fail(self, op: str, error: BaseException) -> None:
        message = f"{type(error).__name__}: {error}".splitlines()[0][:200]
        self.result(op).error = message
        self.progress.say(f"{self.env.backend} · {self.family.label} · {op}: FAILED {message}")


async def _guard(recorder: _Recorder, ops: tuple[str, ...], work: Awaitable[None]) -> None:
    """Record a failure against ``ops`` instead of stopping the run."""
    try:
        await work
    except Exception as error:  # a contender that breaks must not stop the others
        for op in ops:
            if not recorder.result(op).values:
                recorder.fail(op, error)


async def _measure_family(
    env: Env,
    family_type: type[Family],
    sizes: Sizes,
    groups: list[str],
    data: Data,
    recorder: _Recorder,
    run_id: str,
    step_seconds: float,
    rep: int,
) -> None:
    """One repetition of every selected operation of one family, on a fresh loop."""
    family = family_type(env, sizes.chunk_size)

    async def fresh(name: str) -> tuple[str, Contender]:
        prefix = f"{run_id}/{family.key}/{name}"
        return prefix, await family.open(prefix)

    async def clock(work: Awaitable[Any]) -> tuple[float, Any]:
        return await recorder.clock(work, step_seconds)

    prefix, contender = await fresh(f"warm-up-{rep}")
    await _guard(recorder, (), _warm_up(contender, data))
    await family.cleanup(prefix)

    steps: list[tuple[tuple[str, ...], Callable[[], Awaitable[None]]]] = []
    if "small" in groups:

        async def small(rep: int = rep) -> None:
            prefix, contender = await fresh(f"small-{rep}")
            objects = data.small(rep, sizes.small_count)
            seconds, handles = await clock(write_many(contender, objects, sizes.concurrency))
            recorder.add("small_write", rep, len(objects) / seconds)
            seconds, _ = await clock(
                read_many(contender, handles, sizes.concurrency, sizes.small_size)
            )
            recorder.add("small_read", rep, len(objects) / seconds)
            await family.cleanup(prefix)

        steps.append((GROUPS["small"], small))
    if "small_c1" in groups:

        async def small_c1(rep: int = rep) -> None:
            prefix, contender = await fresh(f"small-c1-{rep}")
            objects = data.small(rep, sizes.small_c1_count)
            seconds, _ = await clock(write_many(contender, objects, 1))
            recorder.add("small_write_c1", rep, len(objects) / seconds)
            await family.cleanup(prefix)

        steps.append((GROUPS["small_c1"], small_c1))
    if "blob" in groups:

        async def blob(rep: int = rep) -> None:
            prefix, contender = await fresh(f"blob-{rep}")
            payload, digest = data.blob(rep, sizes.blob_size)
            seconds, handle = await clock(contender.write_blob(payload, digest))
            recorder.add("blob_write", rep, len(payload) / seconds / 1e6)
            seconds, read = await clock(contender.read_blob(handle))
            if len(read) != len(payload):
                raise AssertionError(f"read {len(read)} bytes of {len(payload)}")
            del read
            recorder.add("blob_read", rep, len(payload) / seconds / 1e6)
            await family.cleanup(prefix)

        steps.append((GROUPS["blob"], blob))
    if "stream" in groups:

        async def stream(rep: int = rep) -> None:
            prefix, contender = await fresh(f"stream-{rep}")
            source = data.stream(rep, sizes.stream_size)
            seconds, handle = await clock(contender.write_stream(source.stream()))
            recorder.add("stream_write", rep, source.size / seconds / 1e6)
            seconds, _ = await clock(consume(contender, handle, source))
            recorder.add("stream_read", rep, source.size / seconds / 1e6)
            await family.cleanup(prefix)

        steps.append((GROUPS["stream"], stream))
    for ops, step in steps:
        if any(recorder.result(op).error for op in ops):
            continue  # it failed in an earlier repetition: do not wait on it again
        await _guard(recorder, ops, step())
        gc.collect()
    await family.aclose()


async def _warm_up(contender: Contender, data: Data) -> None:
    """Open connections and import lazily loaded modules before the clock starts."""
    objects = data.small(0, 4)
    handles = await write_many(contender, objects, 4)
    await read_many(contender, handles, 4, data.sizes.small_size)


def _measure_rss(
    env: Env,
    family: type[Family],
    sizes: Sizes,
    data: Data,
    recorder: _Recorder,
    run_id: str,
    timeout: float,
) -> None:
    if env.backend == "memory":
        for op in GROUPS["rss"]:
            recorder.result(op).note = "n/a: the memory store holds the object in this process"
        return
    source = data.stream(0, sizes.rss_size)
    prefix = f"{run_id}/{family.key}/rss"
    job: dict[str, Any] = {
        "env": env.to_json(),
        "family": family.key,
        "prefix": prefix,
        "chunk_size": sizes.chunk_size,
        "size": sizes.rss_size,
        "seed": 3000,
        "digest": source.digest,
    }
    try:
        written = measure_in_subprocess({**job, "op": "write"}, timeout)
        recorder.add("rss_write", 0, written["growth_mib"])
        read = measure_in_subprocess({**job, "op": "read", "handle": written["handle"]}, timeout)
        recorder.add("rss_read", 0, read["growth_mib"])
    except Exception as error:
        for op in GROUPS["rss"]:
            if not recorder.result(op).values:
                recorder.fail(op, error)
    finally:
        cleanup_fs(env, prefix)


def _measure_newloop(
    env: Env,
    keys: list[str],
    sizes: Sizes,
    data: Data,
    recorders: dict[str, _Recorder],
    run_id: str,
    timeout: float,
) -> None:
    """1 KiB write+read in a new loop each and on one loop; then FsspecStorage's growth
    in RSS, fds and sockets over many new loops (see benchmarks/newloop.py).

    Many short rounds, the contenders and the two patterns alternating from one round
    to the next: the emulators drift (Azurite slows as its store grows) and the VM's
    load varies, so long batches one after the other compare moments, not contenders.
    """
    objects = data.small(0, sizes.newloop_count + 1)  # the first of each batch warms up
    for rnd in range(sizes.newloop_rounds):
        shift = rnd % max(len(keys), 1)
        for key in keys[shift:] + keys[:shift]:
            recorder = recorders[key]
            if any(recorder.result(op).error for op in ("newloop", "newloop_long")):
                continue
            recorder.progress.say(f"{env.backend} · {recorder.family.label}: new loops #{rnd + 1}")
            prefixes = [f"{run_id}/{key}/{name}-{rnd}" for name in ("newloop", "oneloop")]
            steps = [
                ("newloop", newloop.new_loop_seconds, prefixes[0]),
                ("newloop_long", newloop.one_loop_seconds, prefixes[1]),
            ]
            if rnd % 2:
                steps.reverse()
            try:
                for op, measure, prefix in steps:
                    contender = newloop.pattern(key, env, prefix)
                    seconds = measure(contender, objects, timeout, recorder.start_cpu)
                    recorder.stop_cpu(seconds)
                    recorder.add(op, rnd, sizes.newloop_count / seconds)
            except Exception as error:
                for op in ("newloop", "newloop_long"):
                    if not recorder.result(op).values:
                        recorder.fail(op, error)
            finally:
                for prefix in prefixes:
                    cleanup_fs(env, prefix)
    gc.collect()
    if "fsspec_storage" in keys:
        _measure_leaks(env, sizes, recorders["fsspec_storage"], run_id, timeout)


def _measure_leaks(
    env: Env, sizes: Sizes, recorder: _Recorder, run_id: str, timeout: float
) -> None:
    loops = sizes.newloop_leak_loops
    prefix = f"{run_id}/fsspec_storage/leaks"
    recorder.progress.say(
        f"{env.backend} · {recorder.family.label}: {loops:,} new loops in a fresh process"
    )
    try:
        growth = newloop.measure_leaks(env, prefix, loops, timeout)
        for op in ("newloop_rss", "newloop_fds", "newloop_sockets"):
            recorder.add(op, 0, growth[op.removeprefix("newloop_")])
    except Exception as error:
        for op in ("newloop_rss", "newloop_fds", "newloop_sockets"):
            recorder.fail(op, error)
    finally:
        cleanup_fs(env, prefix)


def run_backend(
    env: Env,
    families: list[str],
    sizes: Sizes,
    groups: list[str],
    data: Data,
    progress: Progress,
    run_id: str,
    timeout: float,
) -> list[Result]:
    """All measurements of one backend.

    Repetitions are interleaved and the order of the families rotates from one to the
    next, so that no family is always the first to run (on this VM the first writer of
    fresh memory pays the host's page faults) and slow drift spreads over all of them.
    """
    sizes = sizes.for_backend(env.backend)
    recorders: dict[str, _Recorder] = {}
    for key in families:
        family = FAMILIES[key]
        if not family.applies(env):
            continue
        recorder = recorders[key] = _Recorder(env, family, progress)
        if (reason := family.unavailable(env)) is not None:
            for group in groups:
                for op in GROUPS[group]:
                    recorder.result(op).note = reason
    runnable = [key for key, r in recorders.items() if not any(x.note for x in r.results.values())]
    if env.backend == "local":
        _prefault(env, sizes)
    on_one_loop = [group for group in groups if group not in ("rss", "newloop")]
    for rep in range(sizes.repeats if on_one_loop else 0):
        shift = rep % max(len(runnable), 1)
        for key in runnable[shift:] + runnable[:shift]:
            family, recorder = FAMILIES[key], recorders[key]
            progress.say(f"{env.backend} · {family.label}: repetition {rep + 1}")
            try:
                asyncio.run(
                    _measure_family(
                        env, family, sizes, groups, data, recorder, run_id, timeout, rep
                    )
                )
            except Exception as error:  # e.g. the contender cannot even be built
                for group in groups:
                    for op in GROUPS[group]:
                        if not op.startswith("rss") and not recorder.result(op).values:
                            recorder.fail(op, error)
    if "newloop" in groups and env.backend in newloop.BACKENDS:
        keys = [key for key in runnable if key in newloop.FAMILIES]
        _measure_newloop(env, keys, sizes, data, recorders, run_id, timeout)
    if "rss" in groups:
        for key in runnable:
            if key in RSS_FAMILIES:
                _measure_rss(env, FAMILIES[key], sizes, data, recorders[key], run_id, timeout * 2)
    return [result for recorder in recorders.values() for result in recorder.results.values()]


def _prefault(env: Env, sizes: Sizes) -> None:
    """Write and delete a file as large as the largest object, and touch as much memory.

    On this VM (and any whose host backs guest memory lazily) the first write into fresh
    page cache runs at ~300 MB/s and later ones at GB/s: without this, whichever
    contender runs first on local files measures the host, not itself.
    """
    size = max(sizes.blob_size, sizes.stream_size) * 2
    chunk = b"\0" * (8 * 2**20)
    path = f"{env.root}/prefault.bin"
    with open(path, "wb") as file:
        for _ in range(size // len(chunk)):
            file.write(chunk)
    os.remove(path)
    bytearray(size)[::4096] = b"\1" * len(range(0, size, 4096))
