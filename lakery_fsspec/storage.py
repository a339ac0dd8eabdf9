"""FsspecStorage: one labox storage for every fsspec filesystem."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterable, Generator, Mapping
from datetime import timedelta
from functools import partial
from typing import Any

from labox.common.exceptions import NoStorageData
from labox.common.types import TagMap
from labox.core.storage import Digest, GetStreamDigest, Storage

from lakery_fsspec.backends import Backend, backend_for, cleanup
from lakery_fsspec.bridge import Bridge, SerialWriter
from lakery_fsspec.diagnose import diagnose
from lakery_fsspec.errors import ReadOnlyStorageError, StorageUnavailableError
from lakery_fsspec.integrity import Checker
from lakery_fsspec.location import Location, canonical_protocol, open_filesystem
from lakery_fsspec.paths import path_problem
from lakery_fsspec.pointer import FsspecPointer, check_pointer, parse_pointer
from lakery_fsspec.router import DEFAULT_TEMPLATE, PathTemplate, Router, make_router, route
from lakery_fsspec.temp import temp_age, temp_name

__all__ = ["DEFAULT_CHUNK_SIZE", "FsspecStorage"]

DEFAULT_CHUNK_SIZE = 8 * 2**20
"""Bytes per streamed chunk read, and the smallest upload block for stream writes."""

_LOG = logging.getLogger("lakery_fsspec")


class FsspecStorage(Storage[FsspecPointer]):
    """A labox storage on any fsspec URL: local paths, memory://, s3://, gs://, abfs://, ….

    Args:
        url: Where objects go: an fsspec URL (chained URLs included) or a local path.
        router: A path template, a callable ``(digest, tags) -> str``, or None for a
            read-only storage.
        storage_options: Options for the URL's own filesystem (credentials, endpoint).
        read_options: Options per OTHER protocol this storage may read pointers from;
            pointers of any protocol not listed here (or the storage's own) are refused.
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
            (see ``SerialWriter``).
    """

    name = "lakery.fsspec@v1"

    def __init__(
        self,
        url: str | os.PathLike[str],
        *,
        router: str | Router | None = DEFAULT_TEMPLATE,
        storage_options: Mapping[str, Any] | None = None,
        read_options: Mapping[str, Mapping[str, Any]] | None = None,
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
        self._lock = threading.Lock()
        self._backends: dict[str, tuple[Backend, Backend]] = {}

    def __repr__(self) -> str:
        mode = "" if self.router else ", read-only"
        return f"FsspecStorage({self.location.protocol}://{self.location.root}{mode})"

    # --- labox Storage API ---------------------------------------------------------------

    async def write_data(self, data: bytes, digest: Digest, tags: TagMap, /) -> FsspecPointer:
        """Write ``data`` at its routed path unless an object is already there."""
        started = time.perf_counter()
        path = route(self._writable_router(), digest, tags)
        backend = self._backends_for(self.location.protocol)[1]
        final = self._join(self.location.root, path)
        with _located("write_data", backend, final):
            written = await backend.create(final, data, digest, self._temp_path())
        operation = "write_data" if written else "write_data (exists)"
        _log(operation, backend, final, len(data), started)
        return self._pointer(path, digest)

    async def read_data(self, config: FsspecPointer, /) -> bytes:
        """Return the object's bytes exactly as stored."""
        started = time.perf_counter()
        backend, path = self._reader(config)
        try:
            with _located("read_data", backend, path):
                data = await backend.read(path)
        except FileNotFoundError:
            raise _no_data(config) from None
        if self.verify_reads:
            checker = Checker(config, _where(config))
            checker.update(data)
            checker.finish()
        _log("read_data", backend, path, len(data), started)
        return data

    async def write_data_stream(
        self,
        data_stream: AsyncIterable[bytes],
        get_digest: GetStreamDigest,
        tags: TagMap,
        /,
    ) -> FsspecPointer:
        """Stream to a temp object, then move it server-side to the path of its digest."""
        started = time.perf_counter()
        router = self._writable_router()
        initial = get_digest(allow_incomplete=True)
        if isinstance(router, PathTemplate):
            router(initial, tags)  # refuse bad tags before writing anything
        backend = self._backends_for(self.location.protocol)[1]
        temp = self._temp_path()
        try:
            with _located("write_data_stream", backend, temp):
                await self._upload(backend, temp, data_stream, initial)
            digest = get_digest()
            path = route(router, digest, tags)
            final = self._join(self.location.root, path)
            with _located("write_data_stream", backend, final):
                # Create-only where the store can refuse; a refusal is "already stored".
                moved = await backend.move(temp, final, digest)
        except BaseException:
            await backend.discard(temp)
            raise
        operation = "write_data_stream" if moved else "write_data_stream (exists)"
        _log(operation, backend, final, digest["content_size"], started)
        return self._pointer(path, digest)

    async def read_data_stream(self, config: FsspecPointer, /) -> AsyncGenerator[bytes]:
        """Yield the object's bytes in chunks of at most ``chunk_size``."""
        started = time.perf_counter()
        backend, path = self._reader(config)
        checker = Checker(config, _where(config)) if self.verify_reads else None
        size = 0
        try:
            with _located("read_data_stream", backend, path):
                async for chunk in backend.iter_chunks(path, self.chunk_size):
                    if checker:
                        checker.update(chunk)
                    size += len(chunk)
                    yield chunk
        except FileNotFoundError:
            raise _no_data(config) from None
        if checker:
            checker.finish()
        _log("read_data_stream", backend, path, size, started)

    async def list_temp(self, older_than: float | timedelta = 0) -> list[tuple[str, float]]:
        """``(path, age in seconds)`` of temp objects at least ``older_than`` old, oldest first.

        Only names this storage creates under ``temp_prefix`` count. A root without temp
        objects has none; a missing bucket or container raises FileNotFoundError.
        """
        limit = older_than.total_seconds() if isinstance(older_than, timedelta) else older_than
        backend = self._backends_for(self.location.protocol)[1]
        folder = self._join(self.location.root, self.temp_prefix)
        try:
            with _located("list_temp", backend, folder):
                paths = await backend.list(folder)
        except FileNotFoundError as error:
            url, protocol = self.location.url, self.location.protocol
            if diagnose(error, url=url, protocol=protocol).kind == "no-bucket":
                raise
            paths = []  # no temp folder yet
        now = time.time()
        found: list[tuple[str, float]] = []
        for path in paths:
            age = temp_age(posixpath.basename(path), now)
            if age is not None and age >= limit:
                found.append((path, age))
        return sorted(found, key=lambda item: -item[1])

    async def cleanup_temp(self, older_than: float | timedelta = 86_400) -> list[str]:
        """Delete temp objects older than ``older_than`` (seconds) and return their paths.

        Streams interrupted by a crash (SIGKILL, power loss) leave their temp object
        behind. Only names this storage creates under ``temp_prefix`` are considered, so
        final objects are never touched; pick a threshold longer than your longest upload
        so that in-flight streams are left alone.
        """
        started = time.perf_counter()
        backend = self._backends_for(self.location.protocol)[1]
        removed: list[str] = []
        for path, _ in await self.list_temp(older_than):
            with _located("cleanup_temp", backend, path):
                await backend.remove(path)
            removed.append(path)
        if _LOG.isEnabledFor(logging.DEBUG):
            folder = self._join(self.location.root, self.temp_prefix)
            seconds = time.perf_counter() - started
            _LOG.debug(
                "cleanup_temp %s://%s removed %d temp objects in %.4f s",
                backend.protocol,
                folder,
                len(removed),
                seconds,
            )
        return removed

    def serialize_config(self, config: FsspecPointer, /) -> str:
        """Serialize a pointer to JSON."""
        return json.dumps(config, separators=(",", ":"))

    def deserialize_config(self, config: str, /) -> FsspecPointer:
        """Parse and validate a pointer; ValueError on anything that is not one."""
        return parse_pointer(config)

    # --- internals ------------------------------------------------------------------------

    def _writable_router(self) -> Router:
        if self.router is None:
            msg = f"{self!r} is read-only (router=None); give it a router to write."
            raise ReadOnlyStorageError(msg)
        return self.router

    async def _upload(
        self, backend: Backend, path: str, stream: AsyncIterable[bytes], digest: Digest
    ) -> None:
        """Write a stream to ``path`` block by block; on any failure nothing remains."""
        block_size = backend.block_size(self.chunk_size)
        # Serialized: a step abandoned at a timeout never races the abort.
        writer = SerialWriter(partial(backend.open_writer, path, digest, block_size))
        try:
            await backend.io.thread(writer.open)
            pending: list[bytes] = []
            pending_size = written = 0
            async for chunk in stream:
                pending.append(chunk)
                pending_size += len(chunk)
                if pending_size >= block_size:
                    # One worker-thread hop per block, no copies of ours.
                    await backend.io.thread(partial(_write_all, writer, pending, block_size))
                    written += pending_size
                    pending, pending_size = [], 0
            if written or pending_size:
                await backend.io.thread(partial(_write_all, writer, pending, block_size))
                await backend.io.thread(writer.commit)
        except BaseException:
            await cleanup(
                backend.io.thread(writer.abort), f"abort the upload to {backend.protocol}://{path}"
            )
            raise
        if not (written or pending_size):
            # Some writers (s3fs) drop the metadata of an empty file; a put keeps it.
            await backend.io.thread(writer.abort)
            await backend.put(path, b"", digest)

    def _reader(self, pointer: FsspecPointer) -> tuple[Backend, str]:
        check_pointer(pointer)
        protocol = pointer["protocol"]
        if protocol != self.location.protocol and protocol not in self._read_options:
            msg = (
                f"{self!r} refuses to read a {protocol!r} pointer: it reads only its own "
                f"protocol ({self.location.protocol!r}) and those in read_options "
                f"({sorted(self._read_options)}). Add read_options={{{protocol!r}: {{...}}}} "
                "to allow it."
            )
            raise ValueError(msg)
        return self._backends_for(protocol)[0], self._join(pointer["root"], pointer["path"])

    def _backends_for(self, protocol: str) -> tuple[Backend, Backend]:
        """``(reader, writer)`` backends for a protocol, built once on first use."""
        with self._lock:
            if protocol not in self._backends:
                if protocol == self.location.protocol:
                    read_fs, target_fs = self.location.filesystems()
                else:
                    read_fs = target_fs = open_filesystem(protocol, self._read_options[protocol])
                target = backend_for(protocol, target_fs, self.timeout)
                if read_fs is target_fs:
                    reader = target
                else:
                    reader = Backend(protocol, Bridge(read_fs, timeout=self.timeout))
                self._backends[protocol] = (reader, target)
            return self._backends[protocol]

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


def _write_all(writer: SerialWriter, chunks: list[bytes], block_size: int) -> None:
    """Write chunks in order, cutting any larger than a block (writers hold a few times
    what one write hands them)."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), block_size):
            writer.write(view[start : start + block_size])


def _where(pointer: FsspecPointer) -> str:
    return f"{pointer['protocol']}://{pointer['root']}/{pointer['path']}"


def _no_data(pointer: FsspecPointer) -> NoStorageData:
    return NoStorageData(f"No object at {_where(pointer)}; it was deleted or never written.")


def _log(operation: str, backend: Backend, path: str, size: int, started: float) -> None:
    if _LOG.isEnabledFor(logging.DEBUG):
        seconds = time.perf_counter() - started
        protocol = backend.protocol
        _LOG.debug("%s %s://%s %d bytes in %.4f s", operation, protocol, path, size, seconds)
