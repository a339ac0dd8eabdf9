"""Copying a lake to another storage: same relative paths, create-only, checked by hash.

The objects are those ``verify`` would check (a walk of the source, the template read
backwards, never the temp folder; or the objects pointers name). Each is streamed from
the source through a hash check into the destination's write path (staged, then moved
create-only), ``concurrency`` at a time; a source object whose bytes do not match what
its path or pointer records is reported and not copied.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Container, Iterable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from lakery_fsspec._errors import IntegrityError, StorageUnavailableError
from lakery_fsspec._integrity import Checker
from lakery_fsspec._matcher import Expected, PathMatcher
from lakery_fsspec._records import pointers_under, rewrite_pointers
from lakery_fsspec._relocation import Place
from lakery_fsspec._router import PathTemplate, content_type_of
from lakery_fsspec._verify import (
    DEFAULT_CONCURRENCY,
    Checked,
    Problem,
    ProblemKind,
    _Object,  # pyright: ignore[reportPrivateUsage]
    _Outcome,  # pyright: ignore[reportPrivateUsage]
    _pointed,  # pyright: ignore[reportPrivateUsage]
    _Run,  # pyright: ignore[reportPrivateUsage]
    _walked,  # pyright: ignore[reportPrivateUsage]
)

if TYPE_CHECKING:
    from labox.core.storage import Digest
    from sqlalchemy.ext.asyncio import AsyncEngine

    from lakery_fsspec._backends import Backend
    from lakery_fsspec._pointer import FsspecPointer
    from lakery_fsspec._storage import FsspecStorage

__all__ = ["CopyResult", "copy_lake"]


@dataclass
class CopyResult:
    """What a copy did."""

    copied: int = 0
    """Objects written at the destination."""
    present: int = 0
    """Objects already there (of the right size; re-hashed with ``verify_present``)."""
    bytes: int = 0
    """Bytes read from the source (and from the destination, re-hashing)."""
    problems: list[Problem] = field(default_factory=list[Problem])
    """Objects not copied: ``corrupt``, ``truncated``, ``missing`` or ``unreadable`` at
    the source, or ``failed`` (writing at the destination failed)."""
    unmatched: int = 0
    """Walk: objects at paths the template cannot make, not copied."""
    skipped: int = 0
    """Objects left out because their URL was in ``skip``."""
    rewritten: int = 0
    """With ``rewrite``: labox records now pointing at the destination."""

    @property
    def ok(self) -> bool:
        """Whether every object considered is at the destination."""
        return not self.problems


async def copy_lake(
    source: FsspecStorage,
    destination: FsspecStorage,
    pointers: Iterable[FsspecPointer] | AsyncIterable[FsspecPointer] | None = None,
    *,
    after: str | None = None,
    skip: Container[str] = frozenset(),
    concurrency: int = DEFAULT_CONCURRENCY,
    algorithm: str = "sha256",
    verify_present: bool = False,
    database: AsyncEngine | None = None,
    rewrite: bool = False,
    landed_before: Iterable[str] = (),
    server_side: bool = True,
    link: bool = False,
    on_bytes: Callable[[int], None] | None = None,
    on_object: Callable[[Checked], None] | None = None,
) -> CopyResult:
    """Copy the objects of ``source`` (or those ``pointers`` name) to ``destination``,
    each at the same path relative to the root, so that ``relocated=`` reads find them.

    Create-only: an object already at the destination with the right size is left alone
    (and, with ``verify_present``, re-hashed; a damaged one is replaced), one of another
    size is replaced. Objects are streamed and hashed on the way; one whose bytes do not
    hash to what its path (or pointer) records is reported and not copied. ``after``,
    ``skip`` and ``on_object`` resume as in :func:`lakery_fsspec._verify.verify`
    (``Checked.done`` tells ``copied``, ``present`` and ``problem`` apart). A
    StorageUnavailableError from either side stops the copy. ValueError for a walk of a
    source whose router is not a template, or a destination that is, or is inside, the
    source.

    Where both are on one service (same protocol and endpoint) and ``server_side``, each
    object larger than the source's ``chunk_size`` (smaller ones stream in one request
    each way) is read and hashed at the source and then copied by the store itself
    (``Backend.copy_new``: S3 and Azure copies, GCS rewrites, a reflink or in-kernel copy
    locally), with the destination's credentials; where that is refused, the run
    streams. ``link`` asks for hard links instead, where the store has them: a linked
    copy is no backup.

    ``database`` (labox's, an async SQLAlchemy engine) without ``pointers`` copies the
    objects its content records point at under the source's root (compared canonically),
    so that garbage stays behind. With ``rewrite``, once the copy is done, each of those
    records whose object is verified at the destination (copied, hashed on the way, or
    already there and re-hashed: ``rewrite`` implies ``verify_present``; or among
    ``landed_before``, the relative paths an interrupted run landed) is rewritten to
    point there, in batches of one transaction each.
    """
    if rewrite and database is None:
        msg = "rewrite=True rewrites labox's records: pass database=..."
        raise ValueError(msg)
    verify_present = verify_present or rewrite
    if not isinstance(concurrency, int) or isinstance(concurrency, bool) or concurrency < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
        msg = f"concurrency must be a positive number of objects, not {concurrency!r}."
        raise ValueError(msg)
    here = Place(source.location.protocol, source.location.root)
    there = Place(destination.location.protocol, destination.location.root)
    if here.holds(*there) is not None:
        msg = f"Cannot copy {here} to {there}: the destination is the source, or inside it."
        raise ValueError(msg)
    if pointers is None and database is not None:
        pointers = pointers_under(database, here)
    matcher = _matcher(source, algorithm, walking=pointers is None)
    if pointers is None:
        assert matcher is not None
        backend, root = await source._target("copy")  # pyright: ignore[reportPrivateUsage]
        objects = _walked(backend, root, source.temp_prefix, matcher, after)
    else:
        if after is not None:
            msg = "after= resumes a walk; to resume pointers, pass only those not yet handled."
            raise ValueError(msg)
        objects = _pointed(source, pointers, matcher)
    target, target_root = await destination._target("copy")  # pyright: ignore[reportPrivateUsage]
    result = CopyResult()
    landed = set(landed_before) if rewrite else set[str]()

    def counted(checked: Checked) -> None:
        result.copied += checked.done == "copied"
        result.present += checked.done == "present"
        if rewrite and checked.done in ("copied", "present"):
            landed.add(checked.path)
        if on_object is not None:
            on_object(checked)

    run = _CopyRun(
        destination,
        target,
        target_root,
        verify_present=verify_present,
        server_side=server_side and _one_service(source, destination),
        link=link,
        chunk_size=source.chunk_size,
        algorithm=algorithm,
        concurrency=concurrency,
        keep=_everything,
        skip=skip,
        on_bytes=on_bytes,
        on_object=counted,
    )
    await run.run(objects, after)
    result.bytes = run.result.bytes
    result.problems = run.result.problems
    result.unmatched = run.result.unmatched
    result.skipped = run.result.skipped
    if rewrite:
        assert database is not None
        result.rewritten = await rewrite_pointers(database, here, there, landed)
    return result


def _one_service(source: FsspecStorage, destination: FsspecStorage) -> bool:
    """Whether both storages are on one service (same protocol and endpoint), where the
    store may copy from one to the other with the destination's credentials."""
    if source.location.protocol != destination.location.protocol:
        return False
    if source.location.chained or destination.location.chained:
        return False
    endpoint = destination.location.spec.endpoint
    return endpoint(source.location.options) == endpoint(destination.location.options)


def _matcher(source: FsspecStorage, algorithm: str, *, walking: bool) -> PathMatcher | None:
    router = source.router
    if isinstance(router, PathTemplate):
        try:
            return PathMatcher(router, algorithm)
        except ValueError:
            if walking:
                raise
    if walking:
        msg = (
            f"{source!r} cannot tell the hash of an object from its path: its router is not "
            "a path template. Pass the pointers to copy, or give the source the template "
            "its objects were written with."
        )
        raise ValueError(msg)
    return None


class _SourceError(Exception):
    """Reading the source failed (not writing the destination)."""


class _CopyRun(_Run):
    """Copies each object instead of only checking it."""

    def __init__(
        self,
        destination: FsspecStorage,
        target: Backend,
        target_root: str,
        *,
        verify_present: bool,
        server_side: bool,
        link: bool,
        **options: object,
    ) -> None:
        super().__init__(**options)  # pyright: ignore[reportArgumentType]
        self._server_side = server_side
        self._link = link
        self._destination = destination
        self._target = target
        self._target_root = target_root.rstrip("/")
        self._verify_present = verify_present

    async def _check(self, item: _Object) -> _Outcome:
        if item.unreadable is not None or item.backend is None:
            problem = Problem("unreadable", item.url, item.unreadable or "it cannot be read")
            return _Outcome(0, problem, hashed=False)
        source = item.backend
        size = item.size if item.size is not None else await source.size(item.location)
        expected = item.expected or Expected("", None, None)
        if size is None:
            what = "no object there: it was deleted, or never written; not copied"
            return _Outcome(0, Problem("missing", item.url, what), hashed=False)
        if expected.size is not None and size != expected.size:
            kind = "truncated" if size < expected.size else "corrupt"
            what = f"it holds {size} bytes, not the {expected.size} its {item.source} records"
            return _Outcome(0, Problem(kind, item.url, f"{what}; not copied"), hashed=False)
        final = f"{self._target_root}/{item.path}"
        extra = 0
        if await self._target.intact(final, size):
            if not self._verify_present:
                return _Outcome(0, None, hashed=False, done="present")
            there = _Object(
                url=f"{self._target.protocol}://{final}",
                path=item.path,
                backend=self._target,
                location=final,
                expected=Expected(expected.content_hash, expected.algorithm, size),
                source=item.source,
            )
            checked = await super()._check(there)
            if checked.problem is None:
                return _Outcome(checked.size, None, hashed=checked.hashed, done="present")
            extra = checked.size
            await self._target.remove(final)  # damaged: copied anew below
        # A small object streams in one GET and one PUT; a store's copy (S3: a multipart
        # copy, three requests) pays off only where the upload it saves is large.
        if self._server_side and (self._link or size > self._chunk_size):
            done = await self._server_copy(item, expected, size, final)
            if done is not None:
                done.size += extra
                return done
        outcome = await send(self, self._destination, self._target, final, item, expected, size)
        outcome.size += extra
        return outcome

    async def _server_copy(
        self, item: _Object, expected: Expected, size: int, final: str
    ) -> _Outcome | None:
        """Hash the source object, then have the store copy it; None where it cannot (or
        these credentials may not read the source): then this run streams."""
        sized = replace(item, expected=Expected(expected.content_hash, expected.algorithm, size))
        checked = await super()._check(sized)
        if checked.problem is not None:
            problem = checked.problem
            return replace(
                checked, problem=replace(problem, detail=f"{problem.detail}; not copied")
            )
        digest = _digest(expected, size, expected.algorithm or self._algorithm, item.path)
        temp = self._destination._temp_path()  # pyright: ignore[reportPrivateUsage]
        try:
            created = await self._target.copy_new(
                item.location, final, digest, temp, link=self._link
            )
        except (PermissionError, FileNotFoundError):
            created = None
        except StorageUnavailableError:
            raise
        except Exception as error:
            said = next(iter(str(error).strip().splitlines()), "")
            what = f"copying it to {self._target.protocol}://{final} failed: "
            what += f"{type(error).__name__}: {said}"
            return _Outcome(checked.size, Problem("failed", item.url, what), False)
        if created is None:
            self._server_side = False
            return None
        done = "copied" if created else "present"
        return _Outcome(checked.size, None, hashed=checked.hashed, done=done)


async def send(
    run: _Run,
    storage: FsspecStorage,
    target: Backend,
    final: str,
    item: _Object,
    expected: Expected,
    size: int,
) -> _Outcome:
    """Stream ``item`` (its backend and location) through a hash check into ``final`` on
    ``target``, one of ``storage``'s targets, by its write path; the outcome (``done``:
    ``copied``, or ``present`` if an object of that size was there) or the problem."""
    assert item.backend is not None
    algorithm = expected.algorithm or run._algorithm  # pyright: ignore[reportPrivateUsage]
    digest = _digest(expected, size, algorithm, item.path)
    stream = _Checked(item.backend, item, expected.content_hash, algorithm, size, run)
    try:
        written = await storage._store_at(  # pyright: ignore[reportPrivateUsage]
            "copy", target, final, stream, digest
        )
    except IntegrityError as error:
        problem = Problem(stream.kind, item.url, f"{error} Not copied.")
        return _Outcome(stream.seen, problem, hashed=stream.hashed)
    except _SourceError as error:
        cause = error.__cause__
        if isinstance(cause, FileNotFoundError):
            what = "it was gone when read (deleted meanwhile); not copied"
            return _Outcome(stream.seen, Problem("missing", item.url, what), hashed=False)
        return _Outcome(stream.seen, Problem("unreadable", item.url, str(error)), False)
    except StorageUnavailableError:
        raise
    except Exception as error:
        said = next(iter(str(error).strip().splitlines()), "")
        what = f"writing it at {target.protocol}://{final} failed: "
        what += f"{type(error).__name__}: {said}"
        return _Outcome(stream.seen, Problem("failed", item.url, what), False)
    done = "copied" if written else "present"
    return _Outcome(stream.seen, None, hashed=stream.hashed, done=done)


def _digest(expected: Expected, size: int, algorithm: str, path: str) -> Digest:
    """What the destination's write path takes; the content type is the one the path's
    extension names (the source's own metadata is not read; encodings are lost)."""
    return {
        "content_hash": expected.content_hash,
        "content_hash_algorithm": algorithm,
        "content_size": size,
        "content_type": content_type_of(path),
        "content_encoding": None,
    }


class _Checked(AsyncIterable[bytes]):
    """An object's bytes read from the source, hashed on the way; the last chunk is
    followed by IntegrityError, not the end, if they are not what was recorded."""

    def __init__(
        self,
        backend: Backend,
        item: _Object,
        content_hash: str,
        algorithm: str,
        size: int,
        run: _Run,
    ) -> None:
        self._backend = backend
        self._item = item
        self._checker = Checker(content_hash, algorithm, size)
        self._algorithm = algorithm
        self._run = run
        self.kind: ProblemKind = "corrupt"
        self.hashed = False

    @property
    def seen(self) -> int:
        """Bytes read so far."""
        return self._checker.seen

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        run = self._run
        chunks = self._backend.iter_chunks(self._item.location, run._chunk_size)  # pyright: ignore[reportPrivateUsage]
        try:
            while True:
                try:
                    chunk = await anext(chunks)
                except StopAsyncIteration:
                    break
                except StorageUnavailableError:
                    raise
                except Exception as error:
                    said = next(iter(str(error).strip().splitlines()), "")
                    what = f"reading it failed after {self.seen} bytes: "
                    what += f"{type(error).__name__}: {said}; not copied"
                    raise _SourceError(what) from error
                if run._on_bytes is not None:  # pyright: ignore[reportPrivateUsage]
                    run._on_bytes(len(chunk))  # pyright: ignore[reportPrivateUsage]
                if not await self._checker.update(chunk):
                    msg = f"It grew past {self._checker.size} bytes while it was read."
                    raise IntegrityError(msg)
                yield chunk
        finally:
            aclose = getattr(chunks, "aclose", None)
            if aclose is not None:
                await aclose()
        if self._checker.short:
            self.kind = "truncated"
            msg = f"{self.seen} bytes were read of the {self._checker.size} it holds."
            raise IntegrityError(msg)
        if (actual := self._checker.actual()) is not None:
            self.hashed = True
            if actual != self._checker.expected:
                msg = (
                    f"The {self._algorithm} of its {self.seen} bytes is {actual}, not the "
                    f"{self._checker.expected} its {self._item.source} records."
                )
                raise IntegrityError(msg)


def _everything(path: str) -> bool:
    return True
