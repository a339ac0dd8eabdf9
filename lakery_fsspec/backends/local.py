"""Local files."""

from __future__ import annotations

import contextlib
import errno
import os
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, BinaryIO, TypeVar

from anyio.lowlevel import checkpoint

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["LocalBackend"]

T = TypeVar("T")

_BYTES_PER_HOP = 8 * 2**20
"""What local streams move per worker-thread hop, reading (whole chunks, at least one)
and writing (the upload block): from page cache a hop costs as much as a 1 MiB chunk."""
_INLINE_READ = 64 * 2**10
"""Whole files up to this size are read on the caller's loop, in less time than a hop to
a worker thread takes (unless calls have a timeout, which only threads can honour)."""
_UNNAMED_FILES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
"""Linux: a file can be written without a name and linked into its folder when complete."""
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
"""What link() answers on a filesystem without hard links (FAT answers EPERM)."""
_CACHED_ONLY: int | None = getattr(os, "RWF_NOWAIT", None)
"""Linux's flag for reads that return only what the page cache holds, never waiting for
the disk: stream chunks read with it need no thread hop."""


class LocalBackend(Backend):
    """Local files: written to a temp file (unnamed where Linux allows) and linked into
    place, never over an existing file, each operation one thread hop
    (none for small whole-file reads and stream chunks already in the page cache)."""

    min_block_size = _BYTES_PER_HOP

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None and end is None and self.io.timeout is None:
            small = _read_if_small(path)  # blocks the loop, for microseconds
            if small is not None:
                return small
        return await super().read(path, start, end)

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        return await self.io.thread(partial(_create, path, data, temp))

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        opened: list[BinaryIO] = []  # filled in the worker thread, closed here in any case
        per_hop = max(1, _BYTES_PER_HOP // chunk_size)
        try:
            await self.io.thread(lambda: opened.append(open(path, "rb")))  # noqa: SIM115
            file, buffer, offset, on_loop = opened[0], bytearray(chunk_size), 0, 0
            while True:
                chunk = _read_cached(file, buffer, offset)
                if chunk is None:  # not in the page cache: a worker thread waits for it
                    read = partial(_read_chunks, file, offset, chunk_size, per_hop)
                    chunks, on_loop = await self.io.thread(read), 0
                else:
                    chunks, on_loop = [chunk], on_loop + 1
                    if on_loop == per_hop:  # a hop's worth read on the loop: let others run
                        on_loop = 0
                        await checkpoint()
                if not chunks or not chunks[0]:
                    return
                for chunk in chunks:
                    offset += len(chunk)
                    yield chunk
        finally:
            for file in opened:
                file.close()

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        return await self.io.thread(partial(_move_new, source, destination))


def _read_if_small(path: str) -> bytes | None:
    """The file's bytes if it has at most ``_INLINE_READ`` of them, else None."""
    with open(path, "rb") as file:
        if os.fstat(file.fileno()).st_size <= _INLINE_READ:
            return file.read()
    return None


def _read_cached(file: BinaryIO, buffer: bytearray, offset: int) -> bytes | None:
    """The next chunk if the page cache holds it (b"" at the end), else None: read on the
    caller's loop, which this never blocks (Linux's RWF_NOWAIT does not wait for the disk)."""
    if _CACHED_ONLY is None:
        return None
    try:
        size = os.preadv(file.fileno(), [buffer], offset, _CACHED_ONLY)
    except OSError:  # BlockingIOError: not cached; others: unsupported by this filesystem
        return None
    return bytes(buffer) if size == len(buffer) else bytes(memoryview(buffer)[:size])


def _read_chunks(file: BinaryIO, offset: int, chunk_size: int, count: int) -> list[bytes]:
    file.seek(offset)
    chunks: list[bytes] = []
    while len(chunks) < count and (chunk := file.read(chunk_size)):
        chunks.append(chunk)
    return chunks


def _create(path: str, data: bytes, temp: str) -> bool:
    if os.path.exists(path):
        return False
    if _UNNAMED_FILES and (created := _create_unnamed(path, data)) is not None:
        return created
    try:
        _write(temp, data)
        return _move_new(temp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


def _create_unnamed(path: str, data: bytes) -> bool | None:
    """Write an unnamed file in ``path``'s folder and link it there: one directory entry
    instead of a temp name and a rename, and a crash leaves nothing behind. False if
    ``path`` exists; None if this filesystem has no unnamed files."""
    folder = os.path.dirname(path)
    try:
        fd = _making_folder(folder, partial(os.open, folder, os.O_TMPFILE | os.O_WRONLY, 0o666))
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR):  # EISDIR: kernel without it
            return None
        raise
    with open(fd, "wb") as file:
        file.write(data)
        file.flush()
        try:
            # A dir fd makes Python call linkat(AT_SYMLINK_FOLLOW), which links the file
            # behind the /proc link; for an absolute path the fd itself is not used.
            os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd)
        except FileExistsError:
            return False
        except OSError:  # the /proc link refused (a foreign /proc, say): use a named temp
            return None
    return True


def _write(path: str, data: bytes) -> None:
    def write() -> None:
        with open(path, "wb") as file:
            file.write(data)

    _making_folder(os.path.dirname(path), write)


def _making_folder(folder: str, step: Callable[[], T]) -> T:
    """``step()``, run once more after making ``folder`` if it was missing: a folder
    costs a call only on the first write under it."""
    try:
        return step()
    except FileNotFoundError:
        os.makedirs(folder, exist_ok=True)
        return step()


def _move_new(source: str, destination: str) -> bool:
    """Move ``source`` to ``destination`` unless a file is there; whether it moved.
    ``source`` is gone afterwards either way.

    A hard link refuses an existing name (EEXIST) in the same call that creates it, where
    a rename would replace it. Filesystems without hard links get a check and a rename,
    which two writers can race (same bytes either way).
    """
    try:
        _making_folder(os.path.dirname(destination), partial(os.link, source, destination))
    except FileExistsError:
        os.unlink(source)
        return False
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        if os.path.exists(destination):
            os.unlink(source)
            return False
        os.replace(source, destination)
        return True
    os.unlink(source)
    return True
