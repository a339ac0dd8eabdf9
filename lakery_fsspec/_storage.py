"""FsspecStorage: one labox storage for every fsspec filesystem."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
    Generator,
    Iterable,
    Mapping,
)
from datetime import timedelta
from functools import partial
from typing import Any, NamedTuple, Unpack

import anyio
from labox.common.exceptions import NoStorageData
from labox.common.types import TagMap
from labox.core.storage import Digest, GetStreamDigest, Storage

from lakery_fsspec._backends import Backend, ProtocolSpec, open_reader
from lakery_fsspec._bridge import in_daemon_thread, timed_out
from lakery_fsspec._errors import (
    IntegrityError,
    ReadOnlyStorageError,
    StorageUnavailableError,
    exception_chain,
    unavailable,
)
from lakery_fsspec._integrity import Checker, hasher
from lakery_fsspec._location import Location, canonical_protocol, open_filesystem, spec_of
from lakery_fsspec._paths import path_problem
from lakery_fsspec._pointer import FsspecPointer, check_pointer, parse_pointer
from lakery_fsspec._relocation import Relocations
from lakery_fsspec._router import DEFAULT_TEMPLATE, PathTemplate, Router, make_router, route
from lakery_fsspec._temp import TempPath, temp_age, temp_name
from lakery_fsspec._trash import find_in_trash, freshen, restore_object
from lakery_fsspec._verify import Verification, VerifyOptions, verify

__all__ = ["DEFAULT_CHUNK_SIZE", "FsspecStorage"]

DEFAULT_CHUNK_SIZE = 8 * 2**20
"""Bytes per streamed chunk read, and the smallest upload block for stream writes."""

_LOG = logging.getLogger("lakery_fsspec")
_PARENTS: list[object] = []
"""The per-process state of storages used before a fork, in the child (see _backends_for)."""


class FsspecStorage(Storage[FsspecPointer]):
    """A labox storage on any fsspec URL: local paths, memory://, s3://, gs://, abfs://, ….

    Args:
        url: Where objects go: an fsspec URL (chained URLs included) or a local path.
        router: A path template, a callable ``(digest, tags) -> str``, or None for a
            read-only storage.
        storage_options: Options for the URL's own filesystem (credentials, endpoint).
        read_options: Options per OTHER protocol this storage may read pointers from;
            pointers of any protocol not listed here (or the storage's own) are refused,
            unless their object is found, verified, under this storage's root.
        relocated: ``{OLD_URL: NEW_URL}`` for lakes that moved: pointers recorded under an
            old URL's root (or inside it) are read from the new one, same relative path.
            URLs are compared as the storage resolves its own (``s3a://b/lake/`` is
            ``s3://b/lake``); a new URL must be of the storage's own protocol or one in
            ``read_options``, whose options are used. Without an entry, a pointer whose
            object is not at its recorded place is looked up under this storage's root and
            returned only if its bytes hash to the pointer's hash (a WARNING, once per
            recorded root, says where it was found).
        chunk_size: Size of the chunks streamed reads yield, and the smallest upload block
            for streamed writes (backends may round it up to their minimum).
        temp_prefix: Folder under the root where streams are written before their move.
        verify_reads: Check the size and hash recorded in the pointer while reading, and
            raise IntegrityError on a mismatch.
        timeout: Seconds each backend call (one request, one upload block, one move) may
            take, or None to rely on the client's own timeouts and retries (which can
            take minutes against an endpoint that does not answer). A call that runs out
            of time, or fails with a connection error or a server error, raises
            StorageUnavailableError naming the operation and the URL; other backend
            errors (FileNotFoundError, PermissionError, …) propagate as they are. A failed
            stream write still cleans up, each clean-up step bounded by the same timeout,
            so it gives up within a few timeouts. A blocking call that times out cannot be
            killed: it finishes in a worker thread, and a stream's abort runs after it
            (see ``_writers.SerialWriter``).
    """

    name = "lakery.fsspec@v1"

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        router: str | Router | None = DEFAULT_TEMPLATE,
        storage_options: Mapping[str, Any] | None = None,
        read_options: Mapping[str, Mapping[str, Any]] | None = None,
        relocated: Mapping[str | os.PathLike[str], str | os.PathLike[str]] | None = None,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        temp_prefix: str = ".lakery-tmp",
        verify_reads: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.location = Location(url, storage_options or {})
        self.router = make_router(router)
        if not isinstance(chunk_size, int) or chunk_size < 1:  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = f"chunk_size must be a positive number of bytes, not {chunk_size!r}."
            raise ValueError(msg)
        self.chunk_size = chunk_size
        if problem := path_problem(temp_prefix):
            msg = f"temp_prefix {temp_prefix!r} must be a relative folder path, but {problem}."
            raise ValueError(msg)
        self.temp_prefix = temp_prefix.strip("/")
        self.verify_reads = verify_reads
        if not _is_timeout(timeout):
            msg = f"timeout must be a positive number of seconds or None, not {timeout!r}."
            raise ValueError(msg)
        self.timeout = timeout
        self._read_options = {
            canonical_protocol(protocol): dict(options)
            for protocol, options in (read_options or {}).items()
        }
        self._relocations = Relocations(relocated, readable=self._may_read)
        self._origin_pid = os.getpid()
        self._process = _ProcessState()

    def __getstate__(self) -> dict[str, Any]:
        """Pickled as its configuration; clients, locks and filesystems stay behind."""
        state = self.__dict__.copy()
        del state["_process"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._process = _ProcessState()

    def __repr__(self) -> str:
        mode = "" if self.router else ", read-only"
        return f"FsspecStorage({self.location.protocol}://{self.location.root}{mode})"

    # --- labox Storage API ---------------------------------------------------------------

    async def write_data(self, data: bytes, digest: Digest, tags: TagMap, /) -> FsspecPointer:
        """Write ``data`` at its routed path unless an object is already there."""
        started = time.perf_counter()
        path = route(self._writable_router(), digest, tags)
        final = self._join(self.location.root, path)
        backend = (await self._opened("write_data", final)).target
        written = await self._created("write_data", backend, final, data, digest)
        operation = "write_data" if written else "write_data (exists)"
        _log(operation, backend, final, len(data), started)
        return self._pointer(path, digest)

    async def read_data(self, config: FsspecPointer, /) -> bytes:
        """Return the object's bytes exactly as stored."""
        started = time.perf_counter()
        sources, refused = self._sources(config)
        damaged: dict[_Source, IntegrityError] = {}
        missing: FileNotFoundError | None = None
        async for source in _Places(sources, partial(self._trashed, config, sources)):
            backend = await self._reader("read_data", source)
            try:
                with _located("read_data", backend, source.path):
                    data = await backend.read(source.path)
            except FileNotFoundError as error:
                missing = error
                continue
            if self.verify_reads or source.guess:
                checker = Checker.of(config)
                await checker.update(data)
                try:
                    checker.check(str(source))
                except IntegrityError as error:
                    if not source.guess:
                        raise
                    damaged[source] = error
                    continue
            if source.guess:
                self._found_elsewhere("read_data", config, source)
            _log("read_data", backend, source.path, len(data), started)
            return data
        raise _not_found(sources, refused, damaged) from missing

    async def write_data_stream(
        self,
        data_stream: AsyncIterable[bytes],
        get_digest: GetStreamDigest,
        tags: TagMap,
        /,
    ) -> FsspecPointer:
        """Stream to a temp object, then move it server-side to the path of its digest.
        A stream that ends within its first ``chunk_size`` bytes is written as a blob
        (``write_data``'s one create-only write, no temp object): its bytes are in memory
        and its digest known."""
        started = time.perf_counter()
        router = self._writable_router()
        initial = get_digest(allow_incomplete=True)
        if isinstance(router, PathTemplate):
            router(initial, tags)  # refuse bad tags before writing anything
        chunks = aiter(data_stream)
        head: list[bytes] = []
        size = 0
        while size <= self.chunk_size:
            try:
                head.append(await anext(chunks))
            except StopAsyncIteration:
                # Ended within its first chunk: one create-only write, as write_data's.
                digest = get_digest()
                path = route(router, digest, tags)
                final = self._join(self.location.root, path)
                backend = (await self._opened("write_data_stream", final)).target
                whole = b"".join(head)
                moved = await self._created("write_data_stream", backend, final, whole, digest)
                break
            size += len(head[-1])
        else:
            temp = self._temp_path()
            backend = (await self._opened("write_data_stream", temp)).target
            try:
                with _located("write_data_stream", backend, temp):
                    await backend.upload(temp, _chained(head, chunks), initial, self.chunk_size)
                digest = get_digest()
                path = route(router, digest, tags)
                final = self._join(self.location.root, path)
                with _located("write_data_stream", backend, final):
                    # Create-only where the store can refuse; a refusal is "already stored".
                    moved = await backend.move(temp, final, digest)
                if not moved:
                    await self._freshen("write_data_stream", backend, final)
            except BaseException:
                await backend.discard(temp)
                raise
        operation = "write_data_stream" if moved else "write_data_stream (exists)"
        _log(operation, backend, final, digest["content_size"], started)
        return self._pointer(path, digest)

    async def read_data_stream(self, config: FsspecPointer, /) -> AsyncGenerator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size``."""
        started = time.perf_counter()
        sources, refused = self._sources(config)
        damaged: dict[_Source, IntegrityError] = {}
        missing: FileNotFoundError | None = None
        async for source in _Places(sources, partial(self._trashed, config, sources)):
            backend = await self._reader("read_data_stream", source)
            if source.guess:
                # A copy found by its path alone: read through once, before handing out
                # a byte, and used only if it hashes right.
                try:
                    await self._check_copy(backend, source, config)
                except FileNotFoundError as error:
                    missing = error
                    continue
                except IntegrityError as error:
                    damaged[source] = error
                    continue
                self._found_elsewhere("read_data_stream", config, source)
            checker = Checker.of(config) if self.verify_reads or source.guess else None
            size = 0
            yielded = False
            try:
                with _located("read_data_stream", backend, source.path):
                    async for chunk in backend.iter_chunks(source.path, self.chunk_size):
                        if checker and not await checker.update(chunk):
                            checker.check(str(source))
                        size += len(chunk)
                        yielded = True
                        yield chunk
            except FileNotFoundError as error:
                if yielded:
                    raise _gone(source) from error
                missing = error
                continue
            if checker:
                checker.check(str(source))
            _log("read_data_stream", backend, source.path, size, started)
            return
        raise _not_found(sources, refused, damaged) from missing

    async def list_temp(self, older_than: float | timedelta = 0) -> list[tuple[TempPath, float]]:
        """``(path, age in seconds)`` of what streams left under ``temp_prefix`` at least
        ``older_than`` old, oldest first: temp objects, and unfinished uploads (S3
        multipart uploads, Azure blobs of uncommitted blocks) whose ``path.kind`` is
        ``"upload"``.

        Ages are by the server's clock where the backend reports one (S3, GCS, Azure; for
        local files and memory this machine's clock is the server's): the time since the
        object, or the upload's last part, was written. Otherwise the writer's clock in
        the temp name is compared with this one. Only names this storage creates directly
        in ``temp_prefix`` count. A root without temps has none; a missing bucket or
        container raises FileNotFoundError.
        """
        limit = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        folder = self._join(self.location.root, self.temp_prefix)
        backend = (await self._opened("list_temp", folder)).target
        try:
            with _located("list_temp", backend, folder):
                objects = await backend.list_aged(folder)
        except FileNotFoundError as error:
            if await backend.root_missing(self.location.root, error):
                raise
            objects = []  # no temp folder yet
        try:
            with _located("list_temp", backend, folder):
                uploads = await backend.list_uploads(folder)
        except PermissionError as error:  # S3: s3:ListBucketMultipartUploads not granted
            _LOG.warning(
                "list_temp %s://%s: unfinished uploads are left alone, as these credentials "
                "may not list them: %s",
                backend.protocol,
                folder,
                error,
            )
            uploads = []
        candidates = [(TempPath(path), age) for path, age in objects]
        candidates += [(TempPath(path, "upload", id_), age) for path, age, id_ in uploads]
        now = time.time()
        found: list[tuple[TempPath, float]] = []
        for path, age in candidates:
            named = temp_age(posixpath.basename(path), now)
            if named is None:  # not a name this storage makes
                continue
            seconds = named if age is None else age
            if seconds >= limit:
                found.append((path, seconds))
        return sorted(found, key=lambda item: -item[1])

    async def cleanup_temp(self, older_than: float | timedelta = 86_400) -> list[TempPath]:
        """Delete temp objects and abort unfinished uploads at least ``older_than``
        (seconds) old (see ``list_temp``), and return their paths.

        Streams interrupted by a crash (SIGKILL, power loss) leave a temp object or an
        unfinished upload behind. Only names this storage creates under ``temp_prefix``
        are considered, so final objects are never touched; pick a threshold longer than
        your longest stream write so that in-flight streams are left alone.
        """
        started = time.perf_counter()
        backend = self._backends_for(self.location.protocol).target
        removed: list[TempPath] = []
        for path, _ in await self.list_temp(older_than):
            with _located("cleanup_temp", backend, path):
                if path.kind == "upload":
                    await backend.abort_upload(path, path.upload_id)
                else:
                    await backend.remove(path)
            removed.append(path)
        if _LOG.isEnabledFor(logging.DEBUG):
            folder = self._join(self.location.root, self.temp_prefix)
            seconds = time.perf_counter() - started
            uploads = sum(path.kind == "upload" for path in removed)
            _LOG.debug(
                "cleanup_temp %s://%s removed %d temp objects and %d unfinished uploads in %.4f s",
                backend.protocol,
                folder,
                len(removed) - uploads,
                uploads,
                seconds,
            )
        return removed

    async def verify(
        self,
        pointers: Iterable[FsspecPointer] | AsyncIterable[FsspecPointer] | None = None,
        /,
        **options: Unpack[VerifyOptions],
    ) -> Verification:
        """Re-hash stored objects and report the corrupt, truncated, missing and unreadable.

        Without ``pointers``, walks the root (not the temp folder) and compares each object
        with the hash its path holds, read back through the path template (ValueError if
        the router is a callable or None); with them, compares each pointed-to object with
        the hash and size its pointer records, which also finds missing objects. Objects
        are read in chunks on the target filesystem (never a cache layer), ``concurrency``
        at a time. A read error is a problem (``unreadable``); a StorageUnavailableError
        stops the run. Options: see :class:`lakery_fsspec._verify.VerifyOptions`.
        """
        return await verify(self, pointers, **options)

    def serialize_config(self, config: FsspecPointer, /) -> str:
        """Serialize a pointer to JSON."""
        return json.dumps(config, separators=(",", ":"))

    def deserialize_config(self, config: str, /) -> FsspecPointer:
        """Parse and validate a pointer; ValueError on anything that is not one."""
        return parse_pointer(config)

    # --- internals ------------------------------------------------------------------------

    async def _store_at(
        self,
        operation: str,
        backend: Backend,
        final: str,
        data_stream: AsyncIterable[bytes],
        digest: Digest,
    ) -> bool:
        """Write a stream of ``digest["content_size"]`` bytes at ``final`` (a full path on
        ``backend``, one of this storage's targets) the way writes do, create-only (an
        object of another size there is damage, replaced); whether it was written. A
        stream that raises (a hash that does not match) leaves nothing behind. Memory:
        one chunk for objects up to ``chunk_size``, one upload block for larger ones."""
        if digest["content_size"] <= self.chunk_size:
            data = b"".join([chunk async for chunk in data_stream])
            return await self._created(operation, backend, final, data, digest)
        with _located(operation, backend, final):
            written = await backend.upload_new(
                final, data_stream, digest, self.chunk_size, self._temp_path()
            )
        if not written:
            await self._freshen(operation, backend, final)
        return written

    async def _created(
        self, operation: str, backend: Backend, final: str, data: bytes, digest: Digest
    ) -> bool:
        """Write a blob at ``final`` create-only; whether it was written. An object there
        of another size is damage, replaced; one of its size is the content, freshened."""
        with _located(operation, backend, final):
            written = await backend.create(final, data, digest, self._temp_path())
            # Already there: one stat tells the content from a damaged object (replaced).
            if not written and not await backend.intact(final, len(data)):
                written = await backend.create(final, data, digest, self._temp_path())
        if not written:
            await self._freshen(operation, backend, final)
        return written

    async def _freshen(self, operation: str, backend: Backend, final: str) -> None:
        """Tell gc that the object at ``final`` (under this storage's root) was reused
        just now by a write that found it stored."""
        root = self.location.root.rstrip("/") + "/"
        if final.startswith(root):
            with _located(operation, backend, final):
                await freshen(backend, self.location.root, final[len(root) :])

    def _writable_router(self) -> Router:
        if self.router is None:
            msg = f"{self!r} is read-only (router=None); give it a router to write."
            raise ReadOnlyStorageError(msg)
        return self.router

    def _may_read(self, protocol: str) -> bool:
        return protocol == self.location.protocol or protocol in self._read_options

    def _sources(self, pointer: FsspecPointer) -> tuple[list[_Source], ValueError | None]:
        """Where to look for a pointer's object, in order, and why its own place was
        refused (a protocol this storage may not read): its recorded place (or where
        ``relocated`` moved it), then, for a pointer with a hash to check a copy against,
        the same relative path under this storage's root. ValueError for a bad pointer,
        or a refused one with no copy to look for."""
        check_pointer(pointer)
        place, old = self._relocations.place_of(pointer)
        how = "recorded in the pointer" if old is None else f"relocated from {old}"
        sources: list[_Source] = []
        refused = None
        if self._may_read(place.protocol):
            path = self._join(place.root, pointer["path"])
            sources.append(_Source(place.protocol, path, how, guess=False))
        else:
            msg = (
                f"{self!r} refuses to read a {place.protocol!r} pointer: it reads only its own "
                f"protocol ({self.location.protocol!r}) and those in read_options "
                f"({sorted(self._read_options)}), or a copy under its own root that hashes "
                f"to the pointer's hash. Add read_options={{{place.protocol!r}: {{...}}}} to "
                "allow it."
            )
            refused = ValueError(msg)
        own = _Source(
            self.location.protocol,
            self._join(self.location.root, pointer["path"]),
            "under this storage's root",
            guess=True,
        )
        if _checkable(pointer) and own.place not in [source.place for source in sources]:
            sources.append(own)
        if refused is not None and not sources:
            raise refused
        return sources, refused

    async def _trashed(self, pointer: FsspecPointer, sources: list[_Source]) -> _Source | None:
        """Where the pointer's object is once found in gc's trash under this root (a read
        missed it everywhere else): put back at its relative path (create-only), or left
        in the trash and read there by a read-only storage. One listing of the trash and
        one request per kept run; None if it is not there."""
        own = _Source(
            self.location.protocol, self._join(self.location.root, pointer["path"]), "", False
        )
        recorded_here = any(source.place == own.place and not source.guess for source in sources)
        if not recorded_here and not _checkable(pointer):
            return None  # a copy found by its path alone must hash right
        backend = (await self._opened("read (trash)", own.path)).target
        with _located("read (trash)", backend, own.path):
            found = await find_in_trash(backend, self.location.root, pointer["path"])
            if found is None:
                return None
            where = f"in the trash of gc run {found.run}"
            if self.router is None:
                return own._replace(
                    path=found.path, how=f"{where} (read-only: left there)", guess=not recorded_here
                )
            try:
                await restore_object(backend, found.path, own.path, found.size)
            except FileNotFoundError:
                pass  # another read put it back meanwhile
            except PermissionError:  # these credentials may read, not write: read it there
                return own._replace(path=found.path, how=where, guess=not recorded_here)
        return own._replace(how=f"put back from {where}", guess=not recorded_here)

    async def _reader(self, operation: str, source: _Source) -> Backend:
        """The backend that reads at ``source``."""
        return (await self._opened(operation, source.path, source.protocol)).reader

    async def _check_copy(self, backend: Backend, source: _Source, pointer: FsspecPointer) -> None:
        """Read the object at ``source`` through; IntegrityError unless it has the size and
        hash ``pointer`` records."""
        checker = Checker.of(pointer)
        with _located("read_data_stream", backend, source.path):
            async for chunk in backend.iter_chunks(source.path, self.chunk_size):
                if not await checker.update(chunk):
                    break
        checker.check(str(source))

    def _found_elsewhere(self, operation: str, pointer: FsspecPointer, source: _Source) -> None:
        """Tell, once per recorded root, that its objects were found under this root."""
        recorded = f"{pointer['protocol']}://{pointer['root'].rstrip('/')}"
        noted = self._process.found_elsewhere
        if recorded in noted:
            return
        noted.add(recorded)
        here = f"{self.location.protocol}://{self.location.root}"
        _LOG.warning(
            "%s: %s/%s is not at its recorded place (or is of a protocol this storage may "
            "not read); found it under this storage's root, at %s, its bytes hashing to the "
            "pointer's. Objects recorded under %s are looked for there, each at the cost of "
            "a miss and a check; give the storage relocated={%r: %r} to read them there "
            "directly.",
            operation,
            recorded,
            pointer["path"],
            source,
            recorded,
            recorded,
            here,
        )

    async def _target(
        self, operation: str, pointer: FsspecPointer | None = None
    ) -> tuple[Backend, str]:
        """The backend of the target filesystem (no cache layers) and the full path of
        ``pointer`` (where ``relocated`` says it is; never a copy found elsewhere), or of
        the root; ValueError for a pointer ``_sources`` refuses."""
        if pointer is None:
            protocol, path = self.location.protocol, self.location.root
        else:
            sources, refused = self._sources(pointer)
            if refused is not None:
                raise refused
            protocol, path = sources[0].place
        return (await self._opened(operation, path, protocol)).target, path

    async def _opened(self, operation: str, path: str, protocol: str | None = None) -> _Backends:
        """The backends for ``protocol`` (the storage's own by default); errors name
        ``operation`` and ``path``.

        Where making the filesystem connects to its server (``connects_on_init``: SFTP,
        FTP) they are built the first time in a thread of their own, not on the loop, and
        within the storage's timeout (fsspec caches sync instances per thread, so such a
        storage gets its own connection).
        """
        protocol = protocol or self.location.protocol
        process = self._process
        if process.pid == os.getpid() and (found := process.backends.get(protocol)):
            return found
        try:
            if not self._spec(protocol).connects_on_init:
                return self._backends_for(protocol)
            # A thread of its own, not a pool's: connects stuck on one server must not
            # hold the threads other storages need.
            with anyio.fail_after(self.timeout):
                return await in_daemon_thread(partial(self._backends_for, protocol))
        except TimeoutError as error:
            assert self.timeout is not None  # only the deadline raises it here
            failed = timed_out(self.timeout)
            failed.locate(operation, f"{protocol}://{path}")
            raise failed from error
        except StorageUnavailableError as error:
            error.locate(operation, f"{protocol}://{path}")
            raise

    def _backends_for(self, protocol: str) -> _Backends:
        """The backends for a protocol, built on first use in each process."""
        process = self._process
        if process.pid != os.getpid():
            # Made before a fork: the parent's clients, threads and locks are not ours.
            # Kept, never collected here: closing its clients (s3fs's finalizers do)
            # would unregister the parent's pooled sockets from the epoll instance the
            # two processes share, and the parent's next request on one would hang.
            _PARENTS.append(process)
            process = self._process = _ProcessState()
        if (found := process.backends.get(protocol)) is not None:
            return found
        with process.lock:
            if (found := process.backends.get(protocol)) is None:
                found = process.backends[protocol] = self._open_backends(protocol)
            return found

    def _open_backends(self, protocol: str) -> _Backends:
        try:
            if protocol == self.location.protocol:
                read_fs, target_fs = self.location.filesystems()
            else:
                read_fs = target_fs = open_filesystem(protocol, self._read_options[protocol])
        except Exception as error:
            # Clients that connect when made (SFTP, FTP) fail here while the server is down.
            spec = self._spec(protocol)
            if (wrapped := unavailable(error, spec.transient)) is None:
                if why := spec.diagnostics.explain(error, list(exception_chain(error))):
                    error.add_note(f"{why.message} Fix: {why.fix}")  # an unknown host key
                raise
            raise wrapped from error
        spec = self._spec(protocol)
        target = spec.open(protocol, target_fs, self.timeout)
        if target.process_local and os.getpid() != self._origin_pid:
            _warn_process_local(target)
        if read_fs is target_fs:
            return _Backends(target, target)
        return _Backends(open_reader(protocol, read_fs, spec, self.timeout), target)

    def _spec(self, protocol: str) -> type[ProtocolSpec]:
        """The spec of the storage's own protocol as its URL resolved it, or of another
        one it reads."""
        return self.location.spec if protocol == self.location.protocol else spec_of(protocol)

    def _pointer(self, path: str, digest: Digest) -> FsspecPointer:
        return {
            "protocol": self.location.protocol,
            "root": self.location.root,
            "path": path,
            "content_hash": digest["content_hash"],
            "content_hash_algorithm": digest["content_hash_algorithm"],
            "content_size": digest["content_size"],
        }

    def _temp_path(self) -> str:
        return self._join(self.location.root, f"{self.temp_prefix}/{temp_name()}")

    @staticmethod
    def _join(root: str, path: str) -> str:
        return f"{root.rstrip('/')}/{path}"


class _Source(NamedTuple):
    """A place a pointer's object is looked for, and why there."""

    protocol: str
    path: str
    how: str
    guess: bool
    """Found by its relative path alone: returned only if its bytes hash to the pointer's."""

    @property
    def place(self) -> tuple[str, str]:
        return self.protocol, self.path

    def __str__(self) -> str:
        return f"{self.protocol}://{self.path}"


class _Places:
    """The places a read looks at: ``sources``, then, only if all of them missed, where
    ``more()`` finds the object (gc's trash)."""

    def __init__(
        self, sources: list[_Source], more: Callable[[], Awaitable[_Source | None]]
    ) -> None:
        self._sources = iter(sources)
        self._more: Callable[[], Awaitable[_Source | None]] | None = more

    def __aiter__(self) -> _Places:
        return self

    async def __anext__(self) -> _Source:
        if (source := next(self._sources, None)) is not None:
            return source
        more, self._more = self._more, None
        if more is not None and (found := await more()) is not None:
            return found
        raise StopAsyncIteration


class _Backends(NamedTuple):
    """A protocol's backends: reads go through ``reader`` (a chained URL's caching
    layers, say), writes straight to ``target``."""

    reader: Backend
    target: Backend


class _ProcessState:
    """What a storage builds in the process that uses it; never pickled, and made anew
    in a child process after a fork."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.lock = threading.Lock()
        self.backends: dict[str, _Backends] = {}
        self.found_elsewhere: set[str] = set()
        """Recorded roots whose objects were found under the storage's root (told once)."""


_warned_process_local: int | None = None


async def _chained(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncGenerator[bytes]:
    """The chunks already taken from a stream, then the rest of it."""
    head.reverse()  # handed out from the end: each one let go of as it goes
    while head:
        yield head.pop()
    async for chunk in rest:
        yield chunk


def _warn_process_local(backend: Backend) -> None:
    """Warn, once per process, that a per-process store is used away from its maker."""
    global _warned_process_local
    if _warned_process_local != os.getpid():
        _warned_process_local = os.getpid()
        _LOG.warning(
            "A %s:// storage is used in process %d, not in the process that made it: %s "
            "filesystems are per process, so this one sees none of the other process's "
            "objects and they see none of its own. Use a shared filesystem (local files, "
            "S3, ...) for storages used by several processes.",
            backend.protocol,
            os.getpid(),
            backend.protocol,
        )


@contextlib.contextmanager
def _located(operation: str, backend: Backend, path: str) -> Generator[None]:
    """Name the operation and URL in a StorageUnavailableError raised by the backend.

    Only errors not yet located are touched, so one raised by another storage (say, in
    the caller's stream) keeps its own operation and URL.
    """
    try:
        yield
    except StorageUnavailableError as error:
        error.locate(operation, f"{backend.protocol}://{path}")
        raise


def _is_timeout(value: object) -> bool:
    """Whether ``value`` is None or a positive number of seconds."""
    if value is None:
        return True
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _checkable(pointer: FsspecPointer) -> bool:
    """Whether a copy of the object can be checked against the hash the pointer records."""
    return bool(pointer.get("content_hash")) and (
        hasher(pointer.get("content_hash_algorithm")) is not None
    )


def _gone(source: _Source) -> NoStorageData:
    return NoStorageData(f"No object at {source}; it was deleted while it was read.")


def _not_found(
    sources: list[_Source], refused: ValueError | None, damaged: dict[_Source, IntegrityError]
) -> Exception:
    """The error of a read that found the object nowhere: NoStorageData naming every place
    looked at, or, for a pointer of a protocol this storage may not read, its refusal. A
    copy that does not hash right is no object (a damaged one, or another object at the
    same path) and is named as such, never returned."""
    missing = [f"{source} ({source.how})" for source in sources if source not in damaged]
    told = [
        f"The object at {source} ({source.how}) is not returned: its bytes are not the "
        f"ones the pointer records. {error}"
        for source, error in damaged.items()
    ]
    if refused is not None:
        said = [f"No copy at {where} either." for where in missing]
        return ValueError(" ".join([str(refused), *said, *told]))
    # Not refused: the pointer's own place was looked at, and is missing.
    said = f"No object at {', nor at '.join(missing)}; it was deleted or never written."
    return NoStorageData(" ".join([said, *told]))


def _log(operation: str, backend: Backend, path: str, size: int, started: float) -> None:
    if _LOG.isEnabledFor(logging.DEBUG):
        seconds = time.perf_counter() - started
        protocol = backend.protocol
        _LOG.debug("%s %s://%s %d bytes in %.4f s", operation, protocol, path, size, seconds)
