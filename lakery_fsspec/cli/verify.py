"""``lakery-fsspec verify``: re-hash a storage's objects, print each problem, resume a run."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

from lakery_fsspec._pointer import FsspecPointer, parse_pointer
from lakery_fsspec._relocation import Place, rerooted
from lakery_fsspec._storage import FsspecStorage
from lakery_fsspec._verify import KINDS, Checked, Problem, Verification
from lakery_fsspec.cli.journal import Journal, journaled
from lakery_fsspec.cli.progress import Progress, human_size

__all__ = ["EMPTY", "PointerFile", "VerifyRun"]

EMPTY = 3
"""The exit status of a verify that found no stored object to check."""


class PointerFile:
    """Pointers, one JSON object a line as ``lakery-fsspec put`` prints them (blank lines
    ignored), all checked before any is used; ``-`` reads standard input (kept in a temp
    file, so that it can be read more than once). ValueError names a bad line."""

    def __init__(self, name: str) -> None:
        self.name = "standard input" if name == "-" else name
        if name == "-":
            self._file: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close)
            shutil.copyfileobj(sys.stdin.buffer, self._file)
        else:
            try:
                self._file = open(name, "rb")  # noqa: SIM115 (closed in close)
            except OSError as error:
                msg = f"cannot read the pointers file {name!r}: {error.strerror or error}"
                raise ValueError(msg) from None
        self.count = 0
        self.first: FsspecPointer | None = None
        try:
            for pointer in self._read():  # every line checked up front
                self.count += 1
                self.first = self.first or pointer
        except BaseException:
            self.close()  # a bad line: nobody else holds the file
            raise

    def pointers(self, skip: int = 0) -> Iterator[FsspecPointer]:
        """The pointers in file order, but the first ``skip``."""
        for index, pointer in enumerate(self._read()):
            if index >= skip:
                yield pointer

    def total_size(self, skip: int = 0) -> int | None:
        """The sum of the recorded sizes (but the first ``skip``), None if one is missing."""
        total = 0
        for pointer in self.pointers(skip):
            size = pointer.get("content_size")
            if size is None:
                return None
            total += size
        return total

    def close(self) -> None:
        """Close (and for standard input, delete) the file."""
        self._file.close()

    def _read(self) -> Iterator[FsspecPointer]:
        self._file.seek(0)
        for number, line in enumerate(self._file, 1):
            if not line.strip():
                continue
            try:
                yield parse_pointer(line)
            except ValueError as error:
                msg = f"{self.name} line {number}: {error}"
                raise ValueError(msg) from None


@dataclass
class VerifyRun:
    """One ``verify`` command: the storage, what to check and how."""

    storage: FsspecStorage
    pointers: PointerFile | None = None
    sample: float | None = None
    seed: str = "0"
    resume: str | None = None
    concurrency: int = 8
    allow_empty: bool = False
    reroot: bool = False
    """Read each pointer's object under the storage's root, same relative path."""
    repair_from: FsspecStorage | None = None
    """Replace damaged objects with their copies there."""

    def header(self) -> dict[str, Any]:
        """What identifies the run in its journal."""
        return {
            "url": f"{self.storage.location.protocol}://{self.storage.location.root}",
            "mode": "pointers" if self.pointers else "walk",
            "pointers": self.pointers.name if self.pointers else None,
            "sample": self.sample,
            "seed": self.seed if self.sample is not None else None,
            **({"repair_from": _named(self.repair_from)} if self.repair_from else {}),
        }

    def run(self) -> int:
        """Check, print each problem on stdout and a summary on stderr; the exit status."""
        started = time.monotonic()
        result, journal = journaled(self.resume, self.header(), self._check)
        return self._summary(result, journal, time.monotonic() - started)

    async def _check(self, journal: Journal | None) -> Verification:
        pointers = None
        total = None
        if self.pointers is not None:
            skip = journal.handled if journal else 0
            pointers = self.pointers.pointers(skip)
            if self.reroot:
                here = Place(self.storage.location.protocol, self.storage.location.root)
                pointers = (rerooted(pointer, here) for pointer in pointers)
            total = self.pointers.total_size(skip) if self.sample is None else None
        problems = checked_here = 0
        noted = 0.0
        where = f"{self.storage.location.protocol}://{self.storage.location.root}"
        with Progress("verify", total, waiting_on=where) as bar:

            def on_object(checked: Checked) -> None:
                nonlocal problems, checked_here, noted
                checked_here += 1
                if journal is not None:
                    journal.record(checked)
                if checked.problem is not None:
                    repaired = checked.done == "repaired"
                    problems += not repaired
                    bar.clear()
                    print(f"repaired: {checked.problem}" if repaired else checked.problem)
                    sys.stdout.flush()
                now = time.monotonic()
                if now - noted >= 0.1:
                    noted = now
                    bar.note(f"{checked_here} objects, {problems} problem(s)")

            return await self.storage.verify(
                pointers,
                sample=self.sample,
                seed=self.seed,
                after=journal.after if journal and not self.pointers else None,
                skip=journal.skip if journal else frozenset(),
                concurrency=self.concurrency,
                on_bytes=bar.update,
                on_object=on_object,
                repair_from=self.repair_from,
            )

    def _summary(self, result: Verification, journal: Journal | None, seconds: float) -> int:
        problems: list[Problem] = [*(journal.problems if journal else []), *result.problems]
        checked = result.checked + (journal.checked if journal else 0)
        size = result.bytes + (journal.bytes if journal else 0)
        counts = ", ".join(f"{sum(p.kind == kind for p in problems)} {kind}" for kind in KINDS)
        lines = [f"checked {checked} object(s), {human_size(size)}: {counts}"]
        if self.repair_from is not None:
            done = len(result.repaired) + (journal.done["repaired"] if journal else 0)
            lines.append(f"  repaired {done} from {_named(self.repair_from)}")
        if journal is not None and journal.checked:
            lines.append(
                f"  {journal.checked} of them in earlier runs (journal {journal.path}); "
                f"{result.checked} in this one, in {_seconds(seconds)}"
            )
        if result.unmatched:
            lines.append(
                f"  left alone: {result.unmatched} object(s) at paths the template cannot "
                "make (use --template if the objects were written with another one)"
            )
        if result.sampled_out:
            lines.append(f"  left out of the sample: {result.sampled_out} object(s)")
        if result.unhashed:
            lines.append(
                f"  {result.unhashed} object(s) had no hash to compare (none recorded, or an "
                "algorithm this Python lacks); their size was checked where recorded"
            )
        # Objects left out by --sample or checked by an earlier run were found all the same.
        found = checked + result.sampled_out + result.skipped
        where = f"{self.storage.location.protocol}://{self.storage.location.root}"
        if problems:
            lines.append(f"FAILED: {len(problems)} problem(s)")
        elif found:
            lines.append("OK: no problems")
        elif self.allow_empty:
            lines.append(f"OK: nothing is stored under {where} (--allow-empty)")
        else:
            lines.append(f"EMPTY: {_nothing(where, self.pointers, result.unmatched)}")
        print("\n".join(lines), file=sys.stderr)
        if problems:
            return 1
        return EMPTY if not found and not self.allow_empty else 0


def _nothing(where: str, pointers: PointerFile | None, unmatched: int) -> str:
    """Why a run found no object to check, and what to do if that is expected."""
    if pointers is not None:
        why = f"{pointers.name} holds no pointer"
    elif unmatched:
        why = f"no stored object under {where} matches the template"
    else:
        why = f"nothing is stored under {where} (an empty or mistyped root, or the wrong endpoint)"
    return f"{why}; nothing was checked. Pass --allow-empty if an empty lake is expected."


def _seconds(seconds: float) -> str:
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min"


def _named(storage: FsspecStorage) -> str:
    return f"{storage.location.protocol}://{storage.location.root}"
