"""Garbage collection: objects no labox record references, quarantined in the trash and
deleted a grace period later.

A run, in order:

1. list every object under the root (not the temp folder, the trash or the markers),
   with its size and its age by the server's clock, into a spill file on disk;
2. read the references: the relative path of every FsspecStorage pointer in every
   database, whatever root it names (a fallback read can serve any pointer's relative
   path from this root), kept as a sorted array of 64-bit hashes (a collision only keeps
   an object);
3. refuse a run that looks wrong (no reference at all while objects exist; more than a
   tenth of ten or more references pointing nowhere);
4. delete the trash runs older than ``trash_grace``, putting back what is referenced
   again (references and markers read again first);
5. quarantine the candidates (unreferenced, at least ``grace`` old, and no marker younger
   than ``grace``) into a new run folder, references and markers read again first (and
   again every ``REREAD_SECONDS`` while it goes on);
6. remove the markers older than ``grace``.

Memory: the references' hashes (8 bytes each, plus 1 while counting the missing), one
folder listing per level of the walk, and a batch of moves; the objects themselves go
through the spill file.
"""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import posixpath
import random
import tempfile
import time
from array import array
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import IO, TYPE_CHECKING, Literal

from lakery_fsspec._records import all_pointers
from lakery_fsspec._trash import (
    FRESH,
    TRASH,
    TrashRun,
    kept_runs,
    marker_name,
    new_run,
    object_digest,
    prune,
    restore_object,
    stamp_path,
)
from lakery_fsspec._verify import _walk  # pyright: ignore[reportPrivateUsage]

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lakery_fsspec._backends import Backend
    from lakery_fsspec._storage import FsspecStorage

__all__ = [
    "DEFAULT_GRACE",
    "GCRefusedError",
    "GCResult",
    "Tally",
    "collect_garbage",
    "restore_trash_run",
    "trash_runs",
]

DEFAULT_GRACE = 7 * 86_400.0
"""Seconds: the default of both grace periods."""
REREAD_SECONDS = 30.0
"""While quarantining or deleting, references and markers are read again this often."""
BATCH = 256
"""Objects moved or deleted per batch (at most ``concurrency`` at once)."""
SAMPLE = 100
"""References looked up one by one when too many seem to point nowhere."""

Action = Literal["quarantine", "delete", "restore"]
OnObject = Callable[[Action, str, "int | None"], None]


class GCRefusedError(ValueError):
    """A run that looks wrong was refused; ``fix`` says how to go on (``force=True``
    overrides)."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message} {fix}")
        self.reason = message
        self.fix = fix


@dataclass
class Tally:
    """A number of objects and their bytes (sizes the listing did not give count 0)."""

    count: int = 0
    bytes: int = 0

    def add(self, size: int | None) -> None:
        self.count += 1
        self.bytes += size or 0


@dataclass
class GCResult:
    """What a run found and did (with ``dry_run``: would do)."""

    run: str | None = None
    """The trash folder this run quarantined into (None if it quarantined nothing)."""
    dry_run: bool = False
    listed: Tally = field(default_factory=Tally)
    """Objects under the root (not the temp folder, the trash or the markers)."""
    referenced: Tally = field(default_factory=Tally)
    too_young: Tally = field(default_factory=Tally)
    """Unreferenced, but younger than the grace period or freshened by a write within it."""
    quarantined: Tally = field(default_factory=Tally)
    deleted: Tally = field(default_factory=Tally)
    """Trash older than the trash grace period, deleted."""
    restored: Tally = field(default_factory=Tally)
    """Trash put back because a record references it again (or a write reused it)."""
    references: int = 0
    """Distinct relative paths the databases reference."""
    missing: int = 0
    """References whose object is neither under the root nor in the trash (an estimate
    from ``SAMPLE`` lookups when there are more)."""
    markers_removed: int = 0


async def collect_garbage(
    storage: FsspecStorage,
    databases: Sequence[str | AsyncEngine],
    *,
    grace: float | timedelta = DEFAULT_GRACE,
    trash_grace: float | timedelta = DEFAULT_GRACE,
    dry_run: bool = False,
    force: bool = False,
    concurrency: int = 16,
    on_object: OnObject | None = None,
) -> GCResult:
    """Quarantine the objects under ``storage``'s root that no labox record in
    ``databases`` (URLs or SQLAlchemy async engines) references and that are at least
    ``grace`` old (seconds, by the server's clock) into a trash folder of this run, and
    delete trash at least ``trash_grace`` old; see the module's docstring for the order.

    ``on_object(action, path, size)`` is called for each object quarantined, deleted or
    restored (would be, with ``dry_run``), ``path`` relative to the root. GCRefusedError
    for a run that looks wrong, unless ``force``. Temps are ``cleanup_temp``'s business.
    """
    grace_s = _seconds(grace, "grace")
    trash_s = _seconds(trash_grace, "trash_grace")
    if not databases:
        msg = "collect_garbage needs at least one labox database to read references from."
        raise ValueError(msg)
    if not isinstance(concurrency, int) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        msg = f"concurrency must be a positive number of objects, not {concurrency!r}."
        raise ValueError(msg)
    backend, root = await storage._target("gc")
    result = GCResult(dry_run=dry_run)
    where = f"{backend.protocol}://{root}"
    async with _engines(databases) as engines:
        with _Spill() as listing, _Spill() as candidates:
            await _list(backend, root, storage.temp_prefix, listing)  # before the references
            refs = await _references(engines)
            result.references = len(refs)
            found = bytearray(len(refs))
            for path, size, age in listing.read():
                result.listed.add(size)
                if (at := _index(refs, path)) is not None:
                    found[at] = 1
                    result.referenced.add(size)
                elif _old_enough(age, grace_s):
                    candidates.write(path, size, age)
                else:
                    result.too_young.add(size)
            if not force:
                _refuse_empty(result, where)
            if absent := len(found) - sum(found):
                result.missing = await _missing(backend, root, engines, refs, found, absent)
            del found
            if not force:
                _refuse_missing(result, where)
            sweep = _Sweep(backend, root, engines, grace_s, concurrency, result, on_object)
            await sweep.reread()  # just before anything is deleted or quarantined
            expired = [run for run in await kept_runs(backend, root) if run.age >= trash_s]
            for run in expired:
                await sweep.expire(run.run, dry_run)
            if expired:
                await sweep.reread()  # again, just before the first move
            await sweep.quarantine(candidates.read(), dry_run)
            if not dry_run:
                result.markers_removed = await sweep.remove_stale_markers()
    return result


async def trash_runs(storage: FsspecStorage) -> list[TrashRun]:
    """The runs kept in the trash, oldest first, with their ages (seconds)."""
    backend, root = await storage._target("gc")
    return await kept_runs(backend, root)


async def restore_trash_run(
    storage: FsspecStorage, run: str, *, on_object: OnObject | None = None
) -> tuple[Tally, Tally]:
    """Put every object of trash run ``run`` back at its relative path, create-only (an
    object already there is kept, and the trashed copy dropped); ``(restored, already
    there)``. ValueError if there is no such run."""
    backend, root = await storage._target("gc")
    if run not in {kept.run for kept in await kept_runs(backend, root)}:
        msg = f"No gc run {run!r} in the trash of {storage!r}; `gc --runs` lists them."
        raise ValueError(msg)
    restored, there = Tally(), Tally()
    folder = f"{root}/{TRASH}/{run}"
    async for path, size in _trashed(backend, folder):
        try:
            moved = await restore_object(backend, f"{folder}/{path}", f"{root}/{path}", size or 0)
        except FileNotFoundError:
            continue  # put back meanwhile (by a read that missed it)
        (restored if moved else there).add(size)
        if moved and on_object:
            on_object("restore", path, size)
    await backend.remove(stamp_path(root, run))
    await prune(backend, folder)
    return restored, there


# --- the sweep ---------------------------------------------------------------------------


class _Sweep:
    """Expiring trash runs and quarantining candidates, references and markers read
    again just before and every ``REREAD_SECONDS`` while it goes on."""

    def __init__(
        self,
        backend: Backend,
        root: str,
        engines: list[AsyncEngine],
        grace: float,
        concurrency: int,
        result: GCResult,
        on_object: OnObject | None,
    ) -> None:
        self.backend = backend
        self.root = root
        self.engines = engines
        self.grace = grace
        self.concurrency = concurrency
        self.result = result
        self.tell: OnObject = on_object or _ignore
        self.refs = array("Q")
        self.fresh: set[str] = set()
        self.stale: list[str] = []
        self.read_at = 0.0

    async def reread(self) -> None:
        self.refs = await _references(self.engines)
        self.fresh, self.stale = await _markers(self.backend, self.root, self.grace)
        self.read_at = time.monotonic()

    def referenced(self, path: str) -> bool:
        return _index(self.refs, path) is not None

    def freshened(self, path: str) -> bool:
        return marker_name(path) in self.fresh

    async def expire(self, run: str, dry_run: bool) -> None:
        """Delete a trash run, putting back what is referenced or freshened again."""
        folder = f"{self.root}/{TRASH}/{run}"

        async def one(path: str, size: int | None) -> None:
            trashed = f"{folder}/{path}"
            if self.referenced(path) or self.freshened(path):
                if not dry_run:
                    final = f"{self.root}/{path}"
                    try:
                        await restore_object(self.backend, trashed, final, size or 0)
                    except FileNotFoundError:
                        return  # put back meanwhile (by a read that missed it)
                self.result.restored.add(size)
                self.tell("restore", path, size)
                return
            if not dry_run:
                await self.backend.remove(trashed)
            self.result.deleted.add(size)
            self.tell("delete", path, size)

        await self._each(_trashed(self.backend, folder), one)
        if not dry_run:
            await self.backend.remove(stamp_path(self.root, run))
            await prune(self.backend, folder)

    async def quarantine(
        self, candidates: Iterator[tuple[str, int | None, float | None]], dry_run: bool
    ) -> None:
        """Move the candidates still unreferenced and not freshened into a new run."""
        run = new_run()
        stamp = asyncio.Lock()

        async def one(path: str, size: int | None) -> None:
            if self.referenced(path):
                self.result.referenced.add(size)
                return
            if self.freshened(path):
                self.result.too_young.add(size)
                return
            if not dry_run:
                async with stamp:
                    if self.result.run is None:  # the run's age starts with its first move
                        await self.backend.put(
                            stamp_path(self.root, run), b"", object_digest("stamp", 0)
                        )
                        self.result.run = run
                source, trashed = f"{self.root}/{path}", f"{self.root}/{TRASH}/{run}/{path}"
                try:
                    await self._move(source, trashed, size)
                except FileNotFoundError:
                    return  # gone meanwhile (another sweep)
            self.result.quarantined.add(size)
            self.tell("quarantine", path, size)

        async def listed() -> AsyncGenerator[tuple[str, int | None]]:
            for path, size, _ in candidates:
                yield path, size

        await self._each(listed(), one)

    async def _move(self, source: str, destination: str, size: int | None) -> None:
        """Move an object server-side (a rename, or a copy then a delete: it exists
        somewhere at every moment, and its metadata comes along); FileNotFoundError if
        ``source`` is gone. fsspec's makedirs, which that move calls, is not safe against
        a concurrent one (SFTP: "File exists"): on such a failure the backend's own
        create-only move (folders made as its writes make them) is used instead."""
        try:
            await self.backend._move_over(source, destination)
        except (FileNotFoundError, PermissionError):
            raise
        except OSError:
            digest = object_digest(destination, size or 0)
            await self.backend.move(source, destination, digest)

    async def remove_stale_markers(self) -> int:
        """Remove the markers older than the grace period (as last listed)."""
        for marker in self.stale:
            await self.backend.remove(marker)
        return len(self.stale)

    async def _each(
        self,
        objects: AsyncGenerator[tuple[str, int | None]],
        one: Callable[[str, int | None], Awaitable[None]],
    ) -> None:
        """``one(path, size)`` for each object, ``concurrency`` at a time, in batches."""
        batch: list[tuple[str, int | None]] = []
        limit = asyncio.Semaphore(self.concurrency)

        async def limited(path: str, size: int | None) -> None:
            async with limit:
                await one(path, size)

        async def flush() -> None:
            if time.monotonic() - self.read_at > REREAD_SECONDS:
                await self.reread()
            async with asyncio.TaskGroup() as group:
                for path, size in batch:
                    group.create_task(limited(path, size))
            batch.clear()

        async with aclosing(objects):
            async for item in objects:
                batch.append(item)
                if len(batch) >= BATCH:
                    await flush()
        if batch:
            await flush()


# --- listing -----------------------------------------------------------------------------


async def _list(backend: Backend, root: str, temp_prefix: str, spill: _Spill) -> None:
    """Every object under ``root`` (not the temp folder, the trash or the markers) into
    ``spill``, with its size and its age by the server's clock (None where the backend
    reports none, or the object appeared after its folder was listed)."""
    ages: dict[str, dict[str, float | None]] = {}
    async with aclosing(_walk(backend, root, temp_prefix, None)) as entries:
        async for path, entry in entries:
            parent, _, name = path.rpartition("/")
            folder = f"{root}/{parent}" if parent else root
            if folder not in ages:
                for other in [key for key in ages if not folder.startswith(f"{key}/")]:
                    del ages[other]  # a folder the walk is done with
                try:
                    aged = await backend.list_aged(folder)
                except FileNotFoundError:
                    aged = []
                ages[folder] = {posixpath.basename(item.path): item.age for item in aged}
            spill.write(path, entry.size, ages[folder].get(name))


async def _trashed(backend: Backend, folder: str) -> AsyncGenerator[tuple[str, int | None]]:
    """``(relative path, size)`` of every object in a trash run's folder."""
    async with aclosing(_walk(backend, folder, "", None)) as entries:
        async for path, entry in entries:
            yield path, entry.size


async def _markers(backend: Backend, root: str, grace: float) -> tuple[set[str], list[str]]:
    """The names of the markers younger than ``grace``, and the paths of the others."""
    try:
        aged = await backend.list_aged(f"{root}/{FRESH}")
    except FileNotFoundError:
        return set(), []
    fresh: set[str] = set()
    stale: list[str] = []
    for path, age in aged:
        if _old_enough(age, grace):
            stale.append(path)
        else:
            fresh.add(posixpath.basename(path))
    return fresh, stale


# --- references --------------------------------------------------------------------------


async def _references(engines: list[AsyncEngine]) -> array[int]:
    """The hashes of the relative paths every FsspecStorage record points at, sorted,
    each once."""
    hashes = array("Q")
    for engine in engines:
        async for pointer in all_pointers(engine):
            hashes.append(_hash(pointer["path"]))
    ordered = array("Q")
    for value in sorted(hashes):
        if not ordered or ordered[-1] != value:
            ordered.append(value)
    return ordered


def _hash(path: str) -> int:
    return int.from_bytes(hashlib.blake2b(path.encode(), digest_size=8).digest())


def _index(refs: array[int], path: str) -> int | None:
    """Where ``path``'s hash is in ``refs``, or None if it is not referenced."""
    value = _hash(path)
    at = bisect.bisect_left(refs, value)
    return at if at < len(refs) and refs[at] == value else None


async def _missing(
    backend: Backend,
    root: str,
    engines: list[AsyncEngine],
    refs: array[int],
    found: bytearray,
    absent: int,
) -> int:
    """How many references point at objects that are neither under ``root`` nor in the
    trash: the ``absent`` ones (``found[i]`` is 0 for ``refs[i]``) are looked up one by
    one, by their paths read again (a random ``SAMPLE`` of them when there are more, and
    the count estimated)."""
    picked: list[str] = []
    seen = 0
    chooser = random.Random(0)
    for engine in engines:
        async for pointer in all_pointers(engine):
            at = _index(refs, pointer["path"])
            if at is None or found[at]:
                continue  # found, or a record newer than the listing
            found[at] = 1  # once per path
            seen += 1
            if len(picked) < SAMPLE:
                picked.append(pointer["path"])
            elif (slot := chooser.randrange(seen)) < SAMPLE:
                picked[slot] = pointer["path"]
    runs = [kept.run for kept in await kept_runs(backend, root)]
    nowhere = 0
    for path in picked:
        places = [f"{root}/{path}", *(f"{root}/{TRASH}/{run}/{path}" for run in runs)]
        for place in places:
            if await backend.size(place) is not None:
                break
        else:
            nowhere += 1
    if not picked:
        return 0
    return round(absent * nowhere / len(picked))


def _refuse_empty(result: GCResult, where: str) -> None:
    if result.references == 0 and result.listed.count > 0:
        msg = (
            f"Refused: no labox record in the database(s) references any object, yet "
            f"{result.listed.count} objects are stored under {where}. A wrong database, or "
            "a database of another lake, would have every one of them swept."
        )
        fix = (
            "Check --db (every database that saves to this lake). If the lake really holds "
            "nothing anyone references, run again with --force (force=True)."
        )
        raise GCRefusedError(msg, fix)


def _refuse_missing(result: GCResult, where: str) -> None:
    if result.references >= 10 and result.missing * 10 > result.references:
        msg = (
            f"Refused: {result.missing} of the {result.references} objects labox's records "
            f"reference are neither under {where} nor in its trash. A database restored "
            "from an old backup, or the wrong storage URL, looks like this: what is swept "
            "now may be what newer records reference."
        )
        fix = (
            "Check the URL and --db; `lakery-fsspec verify --pointers` tells which objects "
            "are missing. If they are known to be lost, run again with --force (force=True)."
        )
        raise GCRefusedError(msg, fix)


# --- plumbing ----------------------------------------------------------------------------


class _Spill:
    """Objects as ``(path, size, age)`` in a temporary file on disk, read back in order."""

    def __init__(self) -> None:
        self._file: IO[str] = tempfile.TemporaryFile("w+", encoding="utf-8")  # noqa: SIM115

    def __enter__(self) -> _Spill:
        return self

    def __exit__(self, *_: object) -> None:
        self._file.close()

    def write(self, path: str, size: int | None, age: float | None) -> None:
        self._file.write(json.dumps([path, size, age]) + "\n")

    def read(self) -> Iterator[tuple[str, int | None, float | None]]:
        self._file.flush()
        self._file.seek(0)
        for line in self._file:
            path, size, age = json.loads(line)
            yield path, size, age


@asynccontextmanager
async def _engines(databases: Sequence[str | AsyncEngine]) -> AsyncGenerator[list[AsyncEngine]]:
    """Engines for the databases; those made from URLs here are disposed of afterwards."""
    from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

    made: list[AsyncEngine] = []
    engines: list[AsyncEngine] = []
    try:
        for database in databases:
            if isinstance(database, AsyncEngine):
                engines.append(database)
            else:
                engine = create_async_engine(database)
                made.append(engine)
                engines.append(engine)
        yield engines
    finally:
        for engine in made:
            await engine.dispose()


def _seconds(value: float | timedelta, name: str) -> float:
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:  # pyright: ignore[reportUnnecessaryIsInstance]
        msg = f"{name} must be a number of seconds (or a timedelta) >= 0, not {value!r}."
        raise ValueError(msg)
    return float(seconds)


def _old_enough(age: float | None, grace: float) -> bool:
    """Whether something of ``age`` seconds is past ``grace``; of unknown age, only
    with no grace at all."""
    return grace <= 0 if age is None else age >= grace


def _ignore(action: Action, path: str, size: int | None) -> None:
    pass
