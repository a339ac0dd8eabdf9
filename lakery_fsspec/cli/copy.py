"""``lakery-fsspec copy``: copy a lake to another storage, print each object not copied,
resume an interrupted run from its journal."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lakery_fsspec._copy import CopyResult, copy_lake
from lakery_fsspec._records import pointers_under
from lakery_fsspec._relocation import Place
from lakery_fsspec._storage import FsspecStorage
from lakery_fsspec._verify import ALL_KINDS, Checked, Problem
from lakery_fsspec.cli.journal import Journal, journaled
from lakery_fsspec.cli.progress import Progress, human_size
from lakery_fsspec.cli.verify import EMPTY, PointerFile

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["CopyRun"]

_SAID = {
    "corrupt": "corrupt at the source",
    "truncated": "truncated at the source",
    "missing": "missing at the source",
    "unreadable": "unreadable at the source",
    "failed": "failed",
}


@dataclass
class CopyRun:
    """One ``copy`` command: both storages, what to copy and how."""

    source: FsspecStorage
    destination: FsspecStorage
    pointers: PointerFile | None = None
    resume: str | None = None
    concurrency: int = 8
    verify_present: bool = False
    database: str | None = None
    """labox's database URL (``sqlite+aiosqlite:///labox.db``): copy what its records
    point at under the source's root."""
    rewrite: bool = False
    """Then point those records at the destination."""
    server_side: bool = True
    link: bool = False
    allow_empty: bool = False

    def header(self) -> dict[str, Any]:
        """What identifies the run in its journal."""
        return {
            "command": "copy",
            "url": _named(self.source),
            "to": _named(self.destination),
            "mode": "pointers" if self.pointers or self.database else "walk",
            "pointers": self.pointers.name if self.pointers else None,
            **({"db": _hidden(self.database)} if self.database else {}),
            **({"rewrite": True} if self.rewrite else {}),
        }

    def run(self) -> int:
        """Copy, print each object not copied on stdout and a report on stderr; the exit
        status (1 if anything was not copied)."""
        started = time.monotonic()
        result, journal = journaled(self.resume, self.header(), self._copy)
        return self._report(result, journal, time.monotonic() - started)

    async def _copy(self, journal: Journal | None) -> CopyResult:
        if self.database is None:
            return await self._copy_with(journal, None)
        from sqlalchemy.ext.asyncio import create_async_engine

        engine = create_async_engine(self.database)
        try:
            return await self._copy_with(journal, engine)
        finally:
            await engine.dispose()

    async def _copy_with(self, journal: Journal | None, engine: AsyncEngine | None) -> CopyResult:
        pointers: Any = None
        total = None
        if engine is not None:
            skip = journal.handled if journal else 0
            here = Place(self.source.location.protocol, self.source.location.root)
            pointers = pointers_under(engine, here, skip)
        elif self.pointers is not None:
            skip = journal.handled if journal else 0
            pointers = self.pointers.pointers(skip)
            total = self.pointers.total_size(skip)
        done = problems = 0
        noted = 0.0
        with Progress("copy", total, waiting_on=_named(self.source)) as bar:

            def on_object(checked: Checked) -> None:
                nonlocal done, problems, noted
                done += 1
                if journal is not None:
                    journal.record(checked)
                if checked.problem is not None:
                    problems += 1
                    bar.clear()
                    print(checked.problem, flush=True)
                now = time.monotonic()
                if now - noted >= 0.1:
                    noted = now
                    bar.note(f"{done} objects, {problems} not copied")

            return await copy_lake(
                self.source,
                self.destination,
                pointers,
                after=journal.after if journal and not self.pointers else None,
                skip=journal.skip if journal else frozenset(),
                concurrency=self.concurrency,
                verify_present=self.verify_present,
                database=engine,
                rewrite=self.rewrite,
                server_side=self.server_side,
                link=self.link,
                landed_before=journal.landed if journal else (),
                on_bytes=bar.update,
                on_object=on_object,
            )

    def _report(self, result: CopyResult, journal: Journal | None, seconds: float) -> int:
        problems: list[Problem] = [*(journal.problems if journal else []), *result.problems]
        copied = result.copied + (journal.done["copied"] if journal else 0)
        present = result.present + (journal.done["present"] if journal else 0)
        size = result.bytes + (journal.bytes if journal else 0)
        counted = {kind: sum(p.kind == kind for p in problems) for kind in ALL_KINDS}
        counts = [
            f"{count} {_SAID[kind]}"
            for kind, count in counted.items()
            if count or kind in ("corrupt", "failed")
        ]
        lines = [
            f"copy {_named(self.source)} -> {_named(self.destination)}: "
            f"{copied} copied, {present} already there, " + ", ".join(counts),
            f"  {human_size(size)} read in {seconds:.1f} s",
        ]
        if journal is not None and journal.checked:
            lines.append(f"  {journal.checked} object(s) handled by earlier runs ({journal.path})")
        if journal is not None and journal.problems:
            lines.append(
                f"  {len(journal.problems)} of them were not copied and are not retried by "
                "--resume: once their cause is fixed, run again with a new journal (or none); "
                "what is already at DST is not sent again"
            )
        if self.rewrite:
            lines.append(
                f"  {result.rewritten} labox record(s) rewritten to point at "
                f"{_named(self.destination)}"
            )
        if result.unmatched:
            lines.append(
                f"  left alone: {result.unmatched} object(s) at paths the template cannot "
                "make (use --template if the objects were written with another one)"
            )
        found = copied + present + len(problems) + result.skipped
        if problems:
            lines.append(f"FAILED: {len(problems)} object(s) not copied")
        elif found or self.allow_empty:
            lines.append("OK: every object is at the destination")
        else:
            lines.append(
                f"EMPTY: no object to copy under {_named(self.source)} (an empty or mistyped "
                "root, the wrong endpoint, or no record naming it); nothing was copied. Pass "
                "--allow-empty if that is expected."
            )
        print("\n".join(lines), file=sys.stderr)
        if problems:
            return 1
        return EMPTY if not found and not self.allow_empty else 0


def _hidden(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


def _named(storage: FsspecStorage) -> str:
    return f"{storage.location.protocol}://{storage.location.root}"
