"""``gc --db``: the sweep of unreferenced objects, ``gc --runs`` and ``gc --restore RUN``.

Each object acted on is a line on standard output (``quarantined``, ``deleted``,
``restored``, or ``would …`` in a dry run, then its path relative to the root and its
size in bytes); the counts and bytes go to standard error. A refused run exits 1 with
what was wrong and how to go on.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable

from lakery_fsspec._gc import (
    DEFAULT_GRACE,
    Action,
    GCRefusedError,
    GCResult,
    Tally,
    collect_garbage,
    restore_trash_run,
    trash_runs,
)
from lakery_fsspec._storage import FsspecStorage
from lakery_fsspec.cli.errors import Failure, UsageError
from lakery_fsspec.cli.flags import parse_duration
from lakery_fsspec.cli.progress import Progress, human_size

__all__ = ["add_gc_arguments", "check_gc_arguments", "run_sweep", "run_trash"]

_DONE: dict[Action, str] = {
    "quarantine": "quarantined",
    "delete": "deleted",
    "restore": "restored",
}


def add_gc_arguments(gc: argparse.ArgumentParser) -> None:
    """The sweep's options on the ``gc`` command."""
    gc.add_argument(
        "--db",
        action="append",
        default=[],
        metavar="DATABASE_URL",
        help="a labox database (SQLAlchemy URL, e.g. sqlite+aiosqlite:///labox.db) whose "
        "records reference objects of this lake (repeatable: every database that saves "
        "here). With it, gc also sweeps the objects no record references",
    )
    gc.add_argument(
        "--grace",
        type=parse_duration,
        metavar="DURATION",
        help="age (by the server's clock) an unreferenced object must reach before it is "
        "quarantined (default 7d); --db only",
    )
    gc.add_argument(
        "--trash-grace",
        type=parse_duration,
        metavar="DURATION",
        help="age of a trash run before it is deleted (default 7d); --db only",
    )
    gc.add_argument("--runs", action="store_true", help="list the runs kept in the trash")
    gc.add_argument(
        "--restore",
        metavar="RUN",
        help="put the objects of a trash run back (never over an object there)",
    )
    gc.add_argument(
        "--force",
        action="store_true",
        help="sweep even a run that looks wrong (no references at all, or too many "
        "references pointing at objects that are nowhere); --db only",
    )


def check_gc_arguments(args: argparse.Namespace) -> None:
    """Options that make no sense together are a command-line mistake."""
    if args.runs and args.restore is not None:
        raise UsageError("--runs lists the trash, --restore empties one run: give one of them")
    if (args.runs or args.restore is not None) and args.dry_run:
        raise UsageError("--runs and --restore take no --dry-run")
    if not args.db:
        given = [
            name
            for name, value in (
                ("--grace", args.grace),
                ("--trash-grace", args.trash_grace),
                ("--force", args.force or None),
            )
            if value is not None
        ]
        if given:
            raise UsageError(
                f"{', '.join(given)} sweep(s) unreferenced objects, against labox's "
                "records: give the database with --db DATABASE_URL"
            )


def run_trash(args: argparse.Namespace, storage: FsspecStorage, waiting_on: str) -> int:
    """``gc --runs`` or ``gc --restore RUN``."""
    if args.runs:
        with Progress("gc", waiting_on=waiting_on):
            runs = asyncio.run(trash_runs(storage))
        for run in runs:
            print(f"{run.run}\t{_age(run.age)} old")
        print(f"{len(runs)} run(s) in the trash", file=sys.stderr)
        return 0
    try:
        with Progress("gc", waiting_on=waiting_on):
            restored, there = asyncio.run(
                restore_trash_run(storage, args.restore, on_object=_printer(False))
            )
    except ValueError as error:
        raise Failure(str(error), "Pick a run that `gc --runs` lists.") from None
    print(
        f"restored {_tally(restored)}; {_tally(there)} already there (kept)",
        file=sys.stderr,
    )
    return 0


def run_sweep(args: argparse.Namespace, storage: FsspecStorage, waiting_on: str) -> int:
    """``gc --db``: the sweep, after the temps."""
    grace: float = DEFAULT_GRACE if args.grace is None else args.grace
    trash_grace: float = DEFAULT_GRACE if args.trash_grace is None else args.trash_grace
    try:
        with Progress("gc", waiting_on=waiting_on):
            result = asyncio.run(
                collect_garbage(
                    storage,
                    args.db,
                    grace=grace,
                    trash_grace=trash_grace,
                    dry_run=args.dry_run,
                    force=args.force,
                    on_object=_printer(args.dry_run),
                )
            )
    except GCRefusedError as error:
        raise Failure(error.reason, error.fix) from None
    print(_summary(result, grace, trash_grace), file=sys.stderr)
    return 0


def _printer(dry_run: bool) -> Callable[[Action, str, int | None], None]:
    def show(action: Action, path: str, size: int | None) -> None:
        done = f"would {action}" if dry_run else _DONE[action]
        print(f"{done}\t{path}\t{'' if size is None else size}")

    return show


def _summary(result: GCResult, grace: float, trash_grace: float) -> str:
    would = "would " if result.dry_run else ""
    quarantine = "quarantine" if result.dry_run else "quarantined"
    delete = "delete" if result.dry_run else "deleted"
    restore = "restore" if result.dry_run else "restored"
    run = f" into trash run {result.run}" if result.run else ""
    lines = [
        f"{result.references} path(s) referenced by the records; "
        f"{result.listed.count} object(s) listed ({human_size(result.listed.bytes)})",
        f"referenced: {_tally(result.referenced)}; too young (< {_age(grace)}, or "
        f"reused within it): {_tally(result.too_young)}",
        f"{would}{quarantine} {_tally(result.quarantined)}{run}",
        f"{would}{delete} {_tally(result.deleted)} from trash older than {_age(trash_grace)}; "
        f"{would}{restore} {_tally(result.restored)} (referenced again)",
    ]
    if result.missing:
        lines.append(
            f"{result.missing} referenced object(s) are neither under the root nor in the "
            "trash (`lakery-fsspec verify --pointers` names them)"
        )
    return "\n".join(lines)


def _tally(tally: Tally) -> str:
    return f"{tally.count} object(s) ({human_size(tally.bytes)})"


def _age(seconds: float) -> str:
    """``90.0`` -> ``"90s"``, ``86400.0`` -> ``"1d"``."""
    for unit, size in (("d", 86_400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}".removesuffix(".0") + unit
    return f"{seconds:.0f}s"
