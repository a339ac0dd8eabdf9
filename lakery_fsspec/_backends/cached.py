"""Reads through fsspec's whole-file caches: ``simplecache::`` and ``filecache::``."""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import threading
from collections.abc import AsyncIterator, Generator, Hashable
from functools import partial
from typing import IO

from anyio import CancelScope

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.spec import ProtocolSpec

__all__ = ["Cache", "CacheBackend"]


class CacheBackend(Backend):
    """The read side of a chained URL whose outer layer is one of fsspec's whole-file caches.

    Writes never come here: a chained storage writes straight to its target. fsspec's
    whole-file caches download an object into its cache file in place, and a second
    reader that finds the file already there reads it as it is, half-filled: a stream
    read, whose next range is read while the first one downloads the object, came back
    12 of 20 MiB long without an error, and so did processes sharing a cache folder. So
    each object is opened once per read, the first opening of a path (which fills its
    cache file) is serialised with every other opening of it, in this process (a lock)
    and in others on the machine (a POSIX record lock, where there are such locks), and
    a stream's chunks are read from that one open file (served from the cache, with no
    request to the target for its size).
    """

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self.io.thread(partial(self._read, path, start, end))

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        file = await self.io.thread(partial(self._open, path))
        try:
            while chunk := await self.io.thread(partial(file.read, chunk_size)):
                yield chunk
        finally:
            with CancelScope(shield=True):  # a local file: closed at once, even when cancelled
                await self.io.thread(file.close)

    def _read(self, path: str, start: int | None, end: int | None) -> bytes:
        with self._open(path) as file:
            if start:
                file.seek(start)
            return file.read(-1 if end is None else max(end - (start or 0), 0))

    def _open(self, path: str) -> IO[bytes]:
        """Open ``path`` through the cache (blocking), filling its cache file if needed
        while no other reader (a thread here, or another process) opens the same path."""
        # The cache folders and the path name the cache file, whichever filesystem
        # instance (one per storage options) fills it.
        folders = tuple(getattr(self.fs, "storage", ()))
        with _filling.hold((folders, path)), _across_processes(folders[-1:], path):
            if folders and not self.fs._check_file(path):
                # filecache re-reads its metadata file only every cache_check seconds:
                # read it now, or a cache file another process just filled is filled
                # again, in place, under that process's readers.
                self.fs.load_cache()
            if not self.fs._check_file(path):
                # The cache asks the target with exists(), which answers False to any
                # error (a dead connection, too) and then raises FileNotFoundError: ask
                # the target itself, so that "not found" is the target's own answer.
                self.fs.fs.info(path)
            return self.fs.open(path, "rb")


@contextlib.contextmanager
def _across_processes(folders: tuple[str, ...], path: str) -> Generator[None]:
    """Hold ``path``'s lock among the processes filling the cache ``folders`` (the one new
    cache files go to): one byte, at an offset hashed from the path, of a lock file there.
    (POSIX record locks belong to the process: threads are kept apart by ``_filling``.)"""
    if sys.platform == "win32" or not folders:
        yield
        return
    import fcntl

    fd = _lock_files.open(folders[0])
    offset = int.from_bytes(hashlib.sha256(path.encode()).digest()[:4], "big")
    fcntl.lockf(fd, fcntl.LOCK_EX, 1, offset)
    try:
        yield
    finally:
        fcntl.lockf(fd, fcntl.LOCK_UN, 1, offset)


class _LockFiles:
    """One open lock file per cache folder, kept open for the process's life: closing any
    descriptor of a file drops every record lock the process holds on it."""

    NAME = ".lakery-fsspec-fill.lock"

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._fds: dict[str, int] = {}

    def open(self, folder: str) -> int:
        with self._guard:
            if (fd := self._fds.get(folder)) is None:
                os.makedirs(folder, exist_ok=True)
                fd = os.open(os.path.join(folder, self.NAME), os.O_RDWR | os.O_CREAT, 0o666)
                self._fds[folder] = fd
            return fd


class _KeyedLocks:
    """A lock per key, kept only while a thread holds or waits for it."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._locks: dict[Hashable, tuple[threading.Lock, int]] = {}

    @contextlib.contextmanager
    def hold(self, key: Hashable) -> Generator[None]:
        with self._guard:
            lock, users = self._locks.get(key, (None, 0))
            lock = lock or threading.Lock()
            self._locks[key] = (lock, users + 1)
        try:
            with lock:
                yield
        finally:
            with self._guard:
                _, users = self._locks[key]
                if users == 1:
                    del self._locks[key]
                else:
                    self._locks[key] = (lock, users - 1)


_filling: _KeyedLocks
_lock_files: _LockFiles


def _forget_locks() -> None:
    """Start without locks: after a fork, a lock may be held by a thread the child lacks.
    (The child's lock files are opened anew; record locks are not inherited anyway.)"""
    global _filling, _lock_files
    _filling = _KeyedLocks()
    _lock_files = _LockFiles()


_forget_locks()
os.register_at_fork(after_in_child=_forget_locks)


class Cache(ProtocolSpec):
    """The read side of ``simplecache::`` and ``filecache::`` layers."""

    names = ("simplecache", "filecache")
    filesystem = "fsspec.implementations.cached.WholeFileCacheFileSystem"
    backend = CacheBackend
