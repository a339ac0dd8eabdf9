"""Finding what rotted: re-hash stored objects against the hash their path or pointer holds.

Two sources of objects. A walk lists the storage root folder by folder, in path order,
skips the temp folder and gc's folders (the trash, the markers), and reads the expected
hash (and size, where the template records it) back from each path with a
:class:`PathMatcher`. Pointers (as labox's database holds
them, or as ``lakery-fsspec put`` prints them) carry the hash, algorithm and size
themselves, and also tell when an object is missing. Each object is read in chunks on
the target filesystem (never through a cache layer) by at most ``concurrency`` tasks.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Callable,
    Container,
    Iterable,
    Iterator,
)
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypedDict

from lakery_fsspec._errors import StorageUnavailableError
from lakery_fsspec._integrity import Checker
from lakery_fsspec._matcher import Expected, PathMatcher
from lakery_fsspec._router import PathTemplate
from lakery_fsspec._trash import RESERVED

if TYPE_CHECKING:
    from lakery_fsspec._backends.base import Backend, Entry
    from lakery_fsspec._pointer import FsspecPointer
    from lakery_fsspec._storage import FsspecStorage

__all__ = [
    "ALL_KINDS",
    "KINDS",
    "Checked",
    "Problem",
    "ProblemKind",
    "Verification",
    "VerifyOptions",
    "sampled",
    "verify",
    "walk_key",
]

ProblemKind = Literal["corrupt", "truncated", "missing", "unreadable", "failed"]
KINDS: tuple[ProblemKind, ...] = ("corrupt", "truncated", "missing", "unreadable")
"""What can be wrong with a stored object, in the order reports list them."""
ALL_KINDS: tuple[ProblemKind, ...] = (*KINDS, "failed")
"""Those, and ``failed``: a copy could not write the object at its destination."""

DEFAULT_CONCURRENCY = 8


@dataclass(frozen=True)
class Problem:
    """One object that failed verification, and why, in plain words."""

    kind: ProblemKind
    """``corrupt`` (other bytes than its hash), ``truncated`` (fewer bytes than its
    recorded size), ``missing`` (no object where a pointer says) or ``unreadable``
    (reading it failed, or its pointer is refused); for a copy also ``failed`` (writing it
    at the destination failed)."""
    url: str
    """The object's URL, ``protocol://root/path``."""
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.url}: {self.detail}"


@dataclass(frozen=True)
class Checked:
    """One object read and compared, as ``on_object`` receives it."""

    url: str
    path: str
    """Relative to the storage root for a walk; the pointer's path for pointers."""
    size: int
    """Bytes read."""
    problem: Problem | None
    index: int
    """Its position among this run's objects (listed or given), from 0."""
    hashed: bool
    """Whether its hash was compared (False: none recorded, or an algorithm this Python
    cannot compute; the size is still checked where known)."""
    handled: int
    """How many of this run's objects, counted from the first (listed or given), are all
    handled by now: checked, or passed over. A resumed run may skip that many pointers."""
    after: str | None
    """For a walk: every path up to this one (in walk order) is handled, so a resumed run
    may start after it (``after=``). None in the walk's first steps and for pointers."""
    done: str = "checked"
    """What was done: ``checked``, ``problem``, ``repaired`` (``problem`` says what was
    put right); for a copy ``copied``, ``present`` (already at the destination)."""


@dataclass
class Verification:
    """What a verification found."""

    checked: int = 0
    """Objects read and compared."""
    bytes: int = 0
    """Bytes read."""
    problems: list[Problem] = field(default_factory=list[Problem])
    unhashed: int = 0
    """Objects whose hash could not be compared (see ``Checked.hashed``)."""
    unmatched: int = 0
    """Walk: objects at paths the template cannot make, left alone."""
    sampled_out: int = 0
    """Objects left out by ``sample``."""
    skipped: int = 0
    """Objects left out because their URL was in ``skip``."""
    repaired: list[Problem] = field(default_factory=list[Problem])
    """With ``repair_from``: problems found and put right from the other storage (not in
    ``problems``)."""

    @property
    def ok(self) -> bool:
        """Whether no problem was found."""
        return not self.problems

    def of_kind(self, kind: ProblemKind) -> list[Problem]:
        """The problems of one kind."""
        return [problem for problem in self.problems if problem.kind == kind]

    def counts(self) -> dict[ProblemKind, int]:
        """How many problems of each kind (every kind, zeros included)."""
        return {kind: len(self.of_kind(kind)) for kind in KINDS}


class VerifyOptions(TypedDict, total=False):
    """Keyword options of :meth:`FsspecStorage.verify`."""

    sample: float | None
    """Check a random fraction (0 < sample <= 1) of the objects, chosen by ``seed``."""
    seed: int | str
    """Chooses the sample: the same seed picks the same objects, whatever their order."""
    after: str | None
    """Walk only: start after this path relative to the root, in walk order (what
    ``Checked.after`` reported), to resume a long run."""
    skip: Container[str]
    """URLs of objects not to check again (an interrupted run's ``Checked.url``)."""
    concurrency: int
    """How many objects are read at once (default 8)."""
    algorithm: str
    """The hash algorithm when neither the pointer nor the template names one
    (default ``"sha256"``, labox's)."""
    on_bytes: Callable[[int], None] | None
    """Called with the size of every chunk read (a progress bar)."""
    on_object: Callable[[Checked], None] | None
    """Called for every object checked, in the order checks finish."""
    repair_from: FsspecStorage | None
    """Another storage holding the same objects at the same relative paths: a corrupt,
    truncated or missing object is replaced with its copy there, once that copy hashes
    right (``Checked.done`` is then ``repaired``)."""


async def verify(
    storage: FsspecStorage,
    pointers: Iterable[FsspecPointer] | AsyncIterable[FsspecPointer] | None = None,
    *,
    sample: float | None = None,
    seed: int | str = 0,
    after: str | None = None,
    skip: Container[str] = frozenset(),
    concurrency: int = DEFAULT_CONCURRENCY,
    algorithm: str = "sha256",
    on_bytes: Callable[[int], None] | None = None,
    on_object: Callable[[Checked], None] | None = None,
    repair_from: FsspecStorage | None = None,
) -> Verification:
    """Re-hash the objects of ``storage`` (or those ``pointers`` name) and report problems.

    See :meth:`FsspecStorage.verify`. ValueError for options that make no sense, or a walk
    of a storage whose router is not a template (its paths cannot be read back).
    """
    if sample is not None and not (
        isinstance(sample, int | float)  # pyright: ignore[reportUnnecessaryIsInstance]
        and not isinstance(sample, bool)
        and 0 < sample <= 1
    ):
        msg = f"sample must be a fraction of the objects, 0 < sample <= 1, not {sample!r}."
        raise ValueError(msg)
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        msg = f"concurrency must be a positive number of objects, not {concurrency!r}."
        raise ValueError(msg)
    router = storage.router
    matcher = None
    if isinstance(router, PathTemplate):
        try:
            matcher = PathMatcher(router, algorithm)
        except ValueError:
            if pointers is None:
                raise  # says that the paths cannot be read back: pass pointers
    if pointers is None:
        if matcher is None:
            msg = (
                f"{storage!r} cannot tell the hash of an object from its path: its router is "
                f"{'None (read-only)' if router is None else 'a callable'}, not a path "
                "template. Pass the pointers to verify (pointers=..., or --pointers FILE), or "
                "give the storage the template its objects were written with."
            )
            raise ValueError(msg)
        backend, root = await storage._target("verify")
        objects = _walked(backend, root, storage.temp_prefix, matcher, after)
    else:
        if after is not None:
            msg = "after= resumes a walk; to resume pointers, pass only those not yet handled."
            raise ValueError(msg)
        objects = _pointed(storage, pointers, matcher)

    def keep(path: str) -> bool:
        return sample is None or sampled(path, sample, seed)

    options: dict[str, Any] = {
        "chunk_size": storage.chunk_size,
        "algorithm": algorithm,
        "concurrency": concurrency,
        "keep": keep,
        "skip": skip,
        "on_bytes": on_bytes,
        "on_object": on_object,
    }
    if repair_from is None:
        run = _Run(**options)
    else:
        from lakery_fsspec._repair import RepairRun  # it builds on this module

        target, _ = await storage._target("verify")
        source, source_root = await repair_from._target("verify")
        run = RepairRun(storage, target, source, source_root, **options)
    await run.run(objects, after)
    return run.result


def sampled(path: str, fraction: float, seed: int | str) -> bool:
    """Whether the object at ``path`` (relative to the root) is in the ``fraction`` sample
    chosen by ``seed``: a hash of both, so the choice does not depend on order,
    concurrency, the root, or what else is stored (a walk and its pointers agree)."""
    digest = hashlib.blake2b(f"{seed}\0{path}".encode(), digest_size=8).digest()
    return int.from_bytes(digest) < fraction * 2**64


def walk_key(path: str) -> tuple[str, ...]:
    """The order of a walk: paths compared folder by folder (``a/b`` before ``a-b``)."""
    return tuple(path.split("/"))


# --- what to check ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Object:
    """One object to consider: where it is, what it should be, or why it cannot be read."""

    url: str
    path: str
    key: str | None = None  # walk: its path, for resuming
    backend: Backend | None = None
    location: str = ""  # the path its backend reads
    expected: Expected | None = None
    source: str = "path"  # what recorded the expectation: "path" or "pointer"
    unreadable: str | None = None  # why it cannot be read at all
    matched: bool = True  # walk: whether the template can make its path
    size: int | None = None  # walk: the size its listing gave


async def _walked(
    backend: Backend, root: str, temp_prefix: str, matcher: PathMatcher, after: str | None
) -> AsyncGenerator[_Object]:
    """The objects under ``root`` in walk order, each with what its path says."""
    async with aclosing(_walk(backend, root, temp_prefix, after)) as entries:
        async for path, entry in entries:
            location = f"{root}/{path}"
            url = f"{backend.protocol}://{location}"
            expected = matcher.match(path)
            unreadable = None
            if entry.kind not in ("file", "directory", "link"):
                unreadable = (
                    f"it is not a regular file (fsspec type {entry.kind!r}); it was not opened"
                )
            yield _Object(
                url=url,
                path=path,
                key=path,
                backend=backend,
                location=location,
                expected=expected,
                unreadable=unreadable,
                matched=expected is not None,
                size=entry.size,
            )


async def _walk(
    backend: Backend, root: str, temp_prefix: str, after: str | None
) -> AsyncGenerator[tuple[str, Entry]]:
    """``(path relative to root, entry)`` of every object, folder by folder in
    name order, one folder listing in memory per level; folders wholly at or before
    ``after`` are not listed."""
    start = walk_key(after) if after else None
    try:
        top = iter(await backend.entries(root))
    except FileNotFoundError as error:
        await _check_bucket(backend, root, error)
        return  # nothing written yet
    levels: list[tuple[tuple[str, ...], Iterator[Entry]]] = [((), top)]
    while levels:
        parents, entries = levels[-1]
        entry = next(entries, None)
        if entry is None:
            levels.pop()
            continue
        parts = (*parents, entry.name)
        path = "/".join(parts)
        if entry.kind == "directory":
            if path == temp_prefix or path in RESERVED:
                continue  # streams' temps, gc's trash and markers
            if start is not None and parts < start and start[: len(parts)] != parts:
                continue  # everything in it comes before ``after``
            try:
                levels.append((parts, iter(await backend.entries(f"{root}/{path}"))))
            except FileNotFoundError:
                continue  # removed since its parent was listed
        elif start is None or parts > start:
            yield path, entry


async def _check_bucket(backend: Backend, root: str, error: FileNotFoundError) -> None:
    """Raise if a root that cannot be listed is in a bucket (container) that does not
    exist: a storage nobody wrote to yet is empty, a missing bucket is a mistake."""
    if await backend.root_missing(root, error):
        where = f"{backend.protocol}://{root}"
        msg = f"Cannot verify {where}: the bucket or container does not exist."
        raise FileNotFoundError(msg) from error


async def _pointed(
    storage: FsspecStorage,
    pointers: Iterable[FsspecPointer] | AsyncIterable[FsspecPointer],
    matcher: PathMatcher | None,
) -> AsyncGenerator[_Object]:
    """The objects ``pointers`` name, each with what its pointer (or path) says."""
    if isinstance(pointers, AsyncIterable):
        async for pointer in pointers:
            yield await _pointed_object(storage, pointer, matcher)
    else:
        for pointer in pointers:
            yield await _pointed_object(storage, pointer, matcher)


async def _pointed_object(
    storage: FsspecStorage, pointer: FsspecPointer, matcher: PathMatcher | None
) -> _Object:
    try:
        backend, location = await storage._target("verify", pointer)
    except ValueError as error:  # malformed, or a protocol this storage may not read
        return _Object(url=_pointer_url(pointer), path="", unreadable=f"refused: {error}")
    path = pointer["path"]
    url = f"{backend.protocol}://{location}"
    content_hash = pointer.get("content_hash")
    size = pointer.get("content_size")
    algorithm = pointer.get("content_hash_algorithm")
    source = "pointer"
    if not content_hash and matcher is not None and (from_path := matcher.match(path)):
        # An older pointer without the hash: the path still has it.
        content_hash, source = from_path.content_hash, "path"
        algorithm = from_path.algorithm
        size = size if size is not None else from_path.size
    expected = Expected(content_hash or "", algorithm, size)
    return _Object(
        url=url, path=path, backend=backend, location=location, expected=expected, source=source
    )


def _pointer_url(pointer: object) -> str:
    if isinstance(pointer, dict):
        parts = [pointer.get(key) for key in ("protocol", "root", "path")]  # pyright: ignore[reportUnknownMemberType]
        if all(isinstance(part, str) for part in parts):
            return f"{parts[0]}://{parts[1]}/{parts[2]}"
    shown = repr(pointer)
    return shown if len(shown) <= 200 else shown[:200] + "…"


# --- checking -----------------------------------------------------------------------------


@dataclass
class _Outcome:
    size: int
    problem: Problem | None
    hashed: bool
    done: str = "checked"


class _Run:
    """Checks objects with bounded concurrency and keeps count, in the caller's task."""

    def __init__(
        self,
        *,
        chunk_size: int,
        algorithm: str,
        concurrency: int,
        keep: Callable[[str], bool],
        skip: Container[str],
        on_bytes: Callable[[int], None] | None,
        on_object: Callable[[Checked], None] | None,
    ) -> None:
        self.result = Verification()
        self._chunk_size = chunk_size
        self._algorithm = algorithm
        self._concurrency = concurrency
        self._keep = keep
        self._skip = skip
        self._on_bytes = on_bytes
        self._on_object = on_object
        # Checks in flight: task -> (object, its position, the key of the one before it).
        self._running: dict[asyncio.Task[_Outcome], tuple[_Object, int, str | None]] = {}
        self._count = 0  # objects taken from the source so far
        self._last_key: str | None = None

    async def run(self, objects: AsyncGenerator[_Object], after: str | None) -> None:
        self._last_key = after
        try:
            async with aclosing(objects):
                async for item in objects:
                    position, before = self._count, self._last_key
                    if not item.matched:
                        self.result.unmatched += 1
                    elif item.url in self._skip:
                        self.result.skipped += 1
                    elif not self._keep(item.path):
                        self.result.sampled_out += 1
                    else:
                        while len(self._running) >= self._concurrency:
                            await self._collect()
                        task = asyncio.ensure_future(self._check(item))
                        self._running[task] = (item, position, before)
                    # Only now: while it waited for a free slot, it was not handled yet.
                    self._count += 1
                    self._last_key = item.key
            while self._running:
                await self._collect()
        finally:
            for task in self._running:
                task.cancel()
            if self._running:
                await asyncio.wait(self._running)
            for task in self._running:
                if not task.cancelled():
                    task.exception()  # retrieved: the run already fails with the first one

    async def _collect(self) -> None:
        """Wait for at least one check to finish and account for those that have."""
        done, _ = await asyncio.wait(self._running, return_when=asyncio.FIRST_COMPLETED)
        for task in sorted(done, key=lambda task: self._running[task][1]):
            item, position, _ = self._running.pop(task)
            outcome = task.result()  # the storage is unavailable: stop the run
            self.result.checked += 1
            self.result.bytes += outcome.size
            self.result.unhashed += outcome.problem is None and not outcome.hashed
            if outcome.done == "repaired" and outcome.problem is not None:
                self.result.repaired.append(outcome.problem)
            elif outcome.problem is not None:
                self.result.problems.append(outcome.problem)
            if self._on_object is not None:
                handled, after = self._handled()
                self._on_object(
                    Checked(
                        url=item.url,
                        path=item.path,
                        size=outcome.size,
                        problem=outcome.problem,
                        index=position,
                        hashed=outcome.hashed,
                        handled=handled,
                        after=after,
                        done="problem"
                        if outcome.problem is not None and outcome.done != "repaired"
                        else outcome.done,
                    )
                )

    def _handled(self) -> tuple[int, str | None]:
        """How many objects from the first are all handled, and the key of the last."""
        if not self._running:
            return self._count, self._last_key
        _, position, before = min(self._running.values(), key=lambda value: value[1])
        return position, before

    async def _check(self, item: _Object) -> _Outcome:
        """Read one object in chunks and compare it with what was recorded."""
        if item.unreadable is not None or item.backend is None:
            problem = Problem("unreadable", item.url, item.unreadable or "it cannot be read")
            return _Outcome(0, problem, hashed=False)
        expected = item.expected or Expected("", None, None)
        size = expected.size
        checker = Checker(expected.content_hash, expected.algorithm or self._algorithm, size)
        chunks = item.backend.iter_chunks(item.location, self._chunk_size)
        try:
            async for chunk in chunks:
                if self._on_bytes is not None:
                    self._on_bytes(len(chunk))
                if not await checker.update(chunk):
                    what = f"it holds more than the {size} bytes its {item.source} records"
                    return _Outcome(checker.seen, Problem("corrupt", item.url, what), hashed=False)
        except FileNotFoundError:
            what = (
                "no object there: it was deleted, or never written"
                if item.key is None
                else "it was listed, but was gone when read (deleted meanwhile, or a broken link)"
            )
            return _Outcome(checker.seen, Problem("missing", item.url, what), hashed=False)
        except StorageUnavailableError:
            raise  # the storage is down or unreachable, which is not rot
        except Exception as error:  # any other read error: permissions, archived, I/O, …
            said = next(iter(str(error).strip().splitlines()), "")  # SDKs add pages of XML
            what = f"reading it failed after {checker.seen} bytes: {type(error).__name__}: {said}"
            return _Outcome(checker.seen, Problem("unreadable", item.url, what), hashed=False)
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        seen = checker.seen
        if checker.short:
            what = f"{seen} bytes are stored of the {size} its {item.source} records"
            return _Outcome(seen, Problem("truncated", item.url, what), hashed=False)
        actual = checker.actual()
        if actual is None:
            return _Outcome(seen, None, hashed=False)
        if actual != checker.expected:
            name = expected.algorithm or self._algorithm
            what = (
                f"the {name} of its {seen} bytes is {actual}, not the {expected.content_hash} "
                f"its {item.source} records"
            )
            if size is None:
                what += " (the size is not recorded: it may be truncated)"
            return _Outcome(seen, Problem("corrupt", item.url, what), hashed=True)
        return _Outcome(seen, None, hashed=True)
