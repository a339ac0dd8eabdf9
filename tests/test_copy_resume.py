"""``lakery-fsspec copy --resume``: a copy killed midway (SIGKILL, no clean-up) goes on
from its journal, re-sending none of what landed; what was in flight at the kill (at most
one object per worker) is sent again."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import BackendInfo
from helpers import payload

from lakery_fsspec import FsspecStorage

pytestmark = pytest.mark.backends("local", "s3")

COUNT = 300
SIZE = 64 * 1024
WORKERS = 3


def _lake(root: Path) -> set[str]:
    """COUNT objects at the paths the default template gives them; their paths."""
    paths = set()
    for index in range(COUNT):
        data = payload(SIZE, seed=1000 + index)
        digest = hashlib.sha256(data).hexdigest()
        path = f"{digest[:2]}/{digest}.bin"
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(data)
        paths.add(path)
    return paths


def _lines(journal: Path) -> int:
    try:
        return journal.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def test_a_killed_copy_resumes_without_resending_what_landed(
    backend: BackendInfo, tmp_path: Path
) -> None:
    root = tmp_path / "lake"
    paths = _lake(root)
    dst_url = backend.new_url()
    journal = tmp_path / "copy.journal"
    options: list[str] = []
    for key, value in backend.storage_options.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        options += ["--dst-option", f"{key}={shown}"]
    command = [
        sys.executable,
        "-m",
        "lakery_fsspec",
        "copy",
        str(root),
        dst_url,
        *options,
        "--resume",
        str(journal),
        "--concurrency",
        str(WORKERS),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while _lines(journal) < 1 + 30 and process.poll() is None:  # header + 30 objects
        assert time.monotonic() < deadline
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=30)
    if process.returncode != -signal.SIGKILL:
        pytest.fail("the copy finished before it could be killed")
    fs = backend.fs()
    dst_root = FsspecStorage(dst_url, storage_options=backend.storage_options).location.root
    landed = {
        path[len(dst_root) + 1 :] for path in fs.find(dst_root) if "/.lakery-tmp/" not in path
    }
    journaled = _lines(journal) - 1
    assert landed <= paths
    assert journaled <= len(landed) < COUNT

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert resumed.returncode == 0, resumed.stderr
    copied, present = _counts(resumed.stderr)  # both runs'
    # Nothing that landed is sent again: only what had not landed is copied.
    assert copied == journaled + COUNT - len(landed), resumed.stderr
    # Landed but not journaled (a worker's object between its move and its journal
    # line): found by a size check, not sent again.
    assert present == len(landed) - journaled <= WORKERS
    assert f"{journaled} object(s) handled by earlier runs" in resumed.stderr
    # Every object is recorded once, and is at the destination.
    assert _lines(journal) - 1 == COUNT
    final = {path[len(dst_root) + 1 :] for path in fs.find(dst_root)}
    assert {path for path in final if "/.lakery-tmp/" not in f"/{path}"} == paths


def _counts(report: str) -> tuple[int, int]:
    """Copied and already there, as the report counts them (earlier runs' included)."""
    for line in report.splitlines():
        if " copied, " in line:
            words = line.split(": ", 1)[1].split(", ")
            return int(words[0].split()[0]), int(words[1].split()[0])
    raise AssertionError(report)
