"""Writers: the blocking objects a stream's blocks are written through, one at a time."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from typing import Any, Protocol

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem

__all__ = ["FileWriter", "SerialWriter", "Writer"]


class Writer(Protocol):
    """A blocking writer of one object; FsspecStorage drives it from a worker thread."""

    def write(self, data: bytes | memoryview, /) -> None:
        """Append bytes to the object."""
        ...

    def commit(self) -> None:
        """Finish the object so that it becomes visible at its path."""
        ...

    def abort(self) -> None:
        """Give up; nothing of the object may remain afterwards."""
        ...


class FileWriter:
    """A writer over an fsspec file object opened for writing."""

    def __init__(self, fs: AbstractFileSystem, path: str, file: Any) -> None:
        self._fs = fs
        self._path = path
        self._file = file

    def write(self, data: bytes | memoryview, /) -> None:
        self._file.write(data)

    def commit(self) -> None:
        self._file.close()

    def abort(self) -> None:
        if isinstance(self._file, AbstractBufferedFile):
            # close() (also run by __del__) would COMMIT the partial object: discard it
            # (S3 aborts the multipart upload, GCS the resumable session) and mark it closed.
            with contextlib.suppress(Exception):
                self._file.discard()
            self._file.closed = True
        else:
            with contextlib.suppress(Exception):
                self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._path)


class SerialWriter:
    """Runs a Writer's steps one at a time, even when a timed-out step is still running.

    A worker thread abandoned at a timeout may still be inside ``open`` or ``write``
    when the storage gives up and aborts. Every step takes a lock, so ``abort`` waits
    for the step in flight and then discards what it wrote: a late write can never land
    after the abort, and an abort that itself times out still happens in the background
    once the stuck step returns (bounded by the client's own timeouts and retries).
    """

    def __init__(self, opener: Callable[[], Writer]) -> None:
        self._opener = opener
        self._writer: Writer | None = None
        self._aborted = False
        self._lock = threading.Lock()

    def open(self) -> None:
        """Open the underlying writer (blocking)."""
        with self._lock:
            if not self._aborted:
                self._writer = self._opener()

    def write(self, data: bytes | memoryview, /) -> None:
        """Append bytes (blocking)."""
        with self._lock:
            self._live().write(data)

    def commit(self) -> None:
        """Finish the object (blocking)."""
        with self._lock:
            self._live().commit()

    def abort(self) -> None:
        """Discard the object, after any step still in flight (blocking)."""
        with self._lock:
            self._aborted = True
            writer, self._writer = self._writer, None
            if writer is not None:
                writer.abort()

    def _live(self) -> Writer:
        if self._writer is None:
            msg = "the writer was aborted" if self._aborted else "the writer is not open"
            raise RuntimeError(msg)
        return self._writer
