"""The README's Python examples that claim to run do run (issue 20): the process-pool
script and the logging set-up, each in a fresh interpreter."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def example(containing: str) -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.DOTALL)
    [found] = [block for block in blocks if containing in block]
    return found


def run(script: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(script)], cwd=cwd, capture_output=True, text=True, timeout=120
    )


def test_the_many_processes_example_runs(tmp_path: Path) -> None:
    script = tmp_path / "pool.py"
    script.write_text(example("ProcessPoolExecutor"))
    done = run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.splitlines()) == 3
    assert (tmp_path / "lake").is_dir()


def test_the_logging_example_shows_the_debug_lines(tmp_path: Path) -> None:
    script = tmp_path / "logs.py"
    store = """
import asyncio, hashlib
from lakery_fsspec import FsspecStorage
data = b"logged"
digest = {"content_hash": hashlib.sha256(data).hexdigest(), "content_hash_algorithm": "sha256",
          "content_type": "text/plain", "content_encoding": None, "content_size": len(data)}
asyncio.run(FsspecStorage("./lake").write_data(data, digest, {}))
"""
    script.write_text(example("basicConfig") + store)
    done = run(script, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "lakery_fsspec DEBUG write_data file://" in done.stderr
