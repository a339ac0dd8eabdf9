"""``python -m benchmarks [--quick] [--backends ...] [--ops ...] [--contenders ...]``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from dataclasses import replace
from pathlib import Path

from benchmarks.contenders import FAMILIES
from benchmarks.data import Data
from benchmarks.envs import BACKENDS, DEFAULT_BACKENDS, running_envs
from benchmarks.report import machine, tables, targets, targets_table
from benchmarks.results import GROUPS, Result
from benchmarks.run import Progress, run_backend
from benchmarks.workload import FULL, QUICK, Sizes


def _names(text: str, allowed: tuple[str, ...] | list[str], what: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in allowed]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown {what} {unknown}; choose from {list(allowed)}")
    return names


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes, one repetition")
    parser.add_argument(
        "--backends",
        type=lambda text: _names(text, BACKENDS, "backends"),
        default=list(DEFAULT_BACKENDS),
        help=f"comma-separated, from {','.join(BACKENDS)} (default: all but seaweedfs and sshfs)",
    )
    parser.add_argument(
        "--ops",
        type=lambda text: _names(text, list(GROUPS), "operation groups"),
        default=list(GROUPS),
        help=f"comma-separated, from {','.join(GROUPS)} (default: all)",
    )
    parser.add_argument(
        "--contenders",
        type=lambda text: _names(text, list(FAMILIES), "contenders"),
        default=list(FAMILIES),
        help=f"comma-separated, from {','.join(FAMILIES)} (default: all)",
    )
    parser.add_argument("--repeats", type=int, help="override the number of repetitions")
    parser.add_argument("--stream-mib", type=int, help="override the stream size (MiB)")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    parser.add_argument(
        "--from-json",
        type=Path,
        nargs="+",
        help="measure nothing: report these saved results (a later file's backends replace "
        "an earlier file's)",
    )
    parser.add_argument("--markdown", type=Path, help="also write the report here (markdown)")
    parser.add_argument(
        "--timeout",
        type=float,
        help="seconds before one timed step is abandoned (default: 60 quick, 600 full)",
    )
    return parser


def _load(paths: list[Path]) -> list[Result]:
    merged: dict[str, list[Result]] = {}
    for path in paths:
        loaded = [Result.from_json(item) for item in json.loads(path.read_text())]
        for backend in {r.backend for r in loaded}:
            merged[backend] = [r for r in loaded if r.backend == backend]
    return [r for backend in BACKENDS for r in merged.get(backend, [])]


def _report(
    results: list[Result], sizes: Sizes, backends: list[str], mode: str, args: argparse.Namespace
) -> None:
    report = "\n\n".join(
        [
            f"## Benchmark run ({mode})",
            machine(),
            tables(results, sizes, backends),
            "### Targets",
            targets_table(targets(results, sizes)),
        ]
    )
    print(report)
    if args.markdown:
        args.markdown.write_text(report + "\n")
    if args.json and not args.from_json:
        args.json.write_text(json.dumps([r.to_json() for r in results], indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.repeats:
        sizes = replace(sizes, repeats=args.repeats)
    if args.stream_mib:
        sizes = replace(sizes, stream_size=args.stream_mib * 2**20)
    timeout = args.timeout or (60.0 if args.quick else 600.0)
    progress = Progress()
    if args.from_json:
        results = _load(args.from_json)
        backends = [b for b in BACKENDS if any(r.backend == b for r in results)]
        _report(results, sizes, backends, "full" if not args.quick else "quick", args)
        return 0
    run_id = f"bench-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
    data = Data(sizes)
    results: list[Result] = []
    progress.say(f"starting emulators for {', '.join(args.backends)}")
    with running_envs(args.backends) as envs:
        progress.say("emulators ready")
        for backend in args.backends:
            results += run_backend(
                envs[backend],
                args.contenders,
                sizes,
                args.ops,
                data,
                progress,
                run_id,
                timeout,
            )
    _report(results, sizes, args.backends, "quick" if args.quick else "full", args)
    progress.say("done")
    failed = [r for r in results if r.error]
    if failed:
        print(f"{len(failed)} measurement(s) failed; see the tables.", file=sys.stderr)
    # The harness itself works if FsspecStorage and raw fsspec could be measured; other
    # contenders may fail for their own reasons (reported in the tables). No timing is
    # ever asserted.
    broken = [r for r in failed if r.family in ("fsspec_storage", "raw_fsspec")]
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
