"""Peak RSS growth of one stream write or read, measured in a fresh subprocess.

The parent runs ``python -m benchmarks.rss '<json job>'``. The child builds the contender,
warms it up with one small write and read (so clients and connection pools are part of
the baseline), resets the kernel's high-water mark (``/proc/self/clear_refs``), then
streams and reports ``VmHWM - VmRSS(before)``. Where the reset is refused it falls back
to sampling ``VmRSS`` every millisecond in a thread.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import json
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from benchmarks.contenders import FAMILIES
from benchmarks.envs import Env
from benchmarks.timing import consume
from benchmarks.workload import StreamSource, digest_of

__all__ = ["measure_in_subprocess"]


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


class PeakRss:
    """The peak RSS over a block, from the kernel's high-water mark or by sampling."""

    def __enter__(self) -> PeakRss:
        gc.collect()
        self.baseline = _status_kib("VmRSS")
        try:
            with open("/proc/self/clear_refs", "w") as refs:
                refs.write("5")
            self._sampler = None
        except OSError:
            self._peak = self.baseline
            self._stop = threading.Event()
            self._sampler = threading.Thread(target=self._sample, daemon=True)
            self._sampler.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            self._peak = max(self._peak, _status_kib("VmRSS"))

    def __exit__(self, *exc_info: object) -> None:
        if self._sampler is None:
            self.peak = _status_kib("VmHWM")
        else:
            self._stop.set()
            self._sampler.join()
            self.peak = self._peak

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.baseline) / 1024


async def _child(job: dict[str, Any]) -> dict[str, Any]:
    env = Env.from_json(job["env"])
    family = FAMILIES[job["family"]](env, job["chunk_size"])
    contender = await family.open(job["prefix"])
    warm = f"warm-up {job['op']}".encode() * 100  # labox's Azure storage refuses rewrites
    await contender.read_blob(await contender.write_blob(warm, digest_of(warm)))
    source = StreamSource(job["size"], job["chunk_size"], job["seed"], digest=job["digest"])
    handle = job.get("handle")
    started = time.perf_counter()
    with PeakRss() as rss:
        if job["op"] == "write":
            handle = await contender.write_stream(source.stream())
        else:
            await consume(contender, handle, source)
    seconds = time.perf_counter() - started
    await family.aclose()
    return {"growth_mib": rss.growth_mib, "handle": handle, "seconds": seconds}


def measure_in_subprocess(
    job: dict[str, Any], timeout: float, module: str = "benchmarks.rss"
) -> dict[str, Any]:
    """Run one job of ``python -m <module> '<json job>'`` in a fresh interpreter; its
    result (the last line it prints, JSON), or RuntimeError with its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", module, json.dumps(job)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        preexec_fn=_die_with_parent,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise RuntimeError(_exception_line(done.stderr) or f"exit code {done.returncode}")
    return json.loads(lines[-1])


def _die_with_parent() -> None:
    """In the child before exec: SIGKILL it if the benchmark process dies (Linux)."""
    if sys.platform == "linux":
        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _exception_line(stderr: str) -> str | None:
    """The closing line of the last traceback in ``stderr`` (the exception), if any."""
    _, found, tail = stderr.rpartition("Traceback (most recent call last):")
    if not found:
        return None
    for line in tail.splitlines():
        if line and not line.startswith((" ", "\t")):
            return line
    return None


if __name__ == "__main__":
    result = asyncio.run(_child(json.loads(sys.argv[1])))
    print(json.dumps(result), flush=True)
    # obstore's Rust runtime can abort (SIGABRT) while the interpreter shuts down.
    os._exit(0)
