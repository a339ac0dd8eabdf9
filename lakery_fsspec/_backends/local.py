"""Local files."""

from __future__ import annotations

import contextlib
import errno
import os
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, BinaryIO, TypeVar

from lakery_fsspec._backends.clock import Aged, age
from lakery_fsspec._backends.local_fast import UNNAMED_FILES, create_unnamed
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.staged import BlockingFiles, Steps, in_folder, publish

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["Local", "LocalBackend"]

T = TypeVar("T")

_BYTES_PER_HOP = 8 * 2**20
"""What local streams move per worker-thread hop, reading (whole chunks, at least one)
and writing (the upload block): from page cache a hop costs as much as a 1 MiB chunk."""
_NO_LINKS = {errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS}
"""What link() answers on a filesystem without hard links (FAT answers EPERM)."""


class LocalBackend(BlockingFiles):
    """Local files: written to a temp file and linked into place, never over an existing
    file, each operation one worker-thread hop; every call that can block runs in a
    worker thread.

    On Linux, blobs are written as an unnamed file and linked into place (``local_fast``;
    the benchmark's plain contender switches it off).
    """

    min_block_size = _BYTES_PER_HOP
    unnamed_files: bool = UNNAMED_FILES

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        if start is None and end is None and self.io.timeout is None:
            # Whole small files: one open, read and close per call, many calls per hop.
            return await self.io.short(partial(_read_whole, path))
        return await super().read(path, start, end)

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        """An unnamed file linked into place where Linux allows, else the staged way."""
        if self.unnamed_files:
            created = await self.io.thread(partial(_create_unnamed, path, data))
            if created is not None:
                return created
        return await super().create(path, data, digest, temp)

    def _on_connection(self, step: Callable[..., T], /, *args: Any) -> T:
        return step(None, *args)  # local files need no connection

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        opened: list[BinaryIO] = []  # filled in the worker thread, closed here in any case
        per_hop = max(1, _BYTES_PER_HOP // chunk_size)
        try:
            await self.io.thread(lambda: opened.append(open(path, "rb")))  # noqa: SIM115
            while chunks := await self.io.thread(
                partial(_read_chunks, opened[0], chunk_size, per_hop)
            ):
                for chunk in chunks:
                    yield chunk
        finally:
            for file in opened:
                file.close()

    async def copy_new(
        self, source: str, destination: str, digest: Digest, temp: str, *, link: bool = False
    ) -> bool | None:
        if link:
            return await self._run(
                in_folder, self.steps, destination, _hard_link, source, destination
            )
        try:
            return await self._run(_clone_new, source, destination, temp)
        except BaseException:
            await self.discard(temp)
            raise

    async def list_aged(self, folder: str) -> list[Aged]:
        # The kernel stamps each write; this machine's clock is the server's.
        return await self.io.thread(partial(_list_aged, folder))


def _list_aged(folder: str) -> list[Aged]:
    """Files directly in ``folder``, aged since their last write."""
    written = _files_with_mtimes(None, folder)
    now = time.time()
    return [Aged(path, None if mtime is None else age(now, mtime)) for path, mtime in written]


def _files_with_mtimes(_: None, folder: str) -> list[tuple[str, float | None]]:
    written: list[tuple[str, float | None]] = []
    with os.scandir(folder) as entries:
        for entry in entries:
            try:
                if entry.is_file(follow_symlinks=False):
                    written.append((entry.path, entry.stat(follow_symlinks=False).st_mtime))
            except FileNotFoundError:  # moved away while listed
                continue
    return written


def _read_whole(path: str) -> bytes:
    with open(path, "rb") as file:
        return file.read()


def _read_chunks(file: BinaryIO, chunk_size: int, count: int) -> list[bytes]:
    """Up to ``count`` chunks from where ``file`` is (none at its end)."""
    chunks: list[bytes] = []
    while len(chunks) < count and (chunk := file.read(chunk_size)):
        chunks.append(chunk)
    return chunks


def _create_unnamed(path: str, data: bytes) -> bool | None:
    """``create_unnamed``, unless a file is at ``path`` already (False). A new folder is
    made here: a blob in a new folder costs one worker-thread hop too."""
    if os.path.exists(path):
        return False
    created = create_unnamed(path, data)
    if created is None and not os.path.isdir(folder := os.path.dirname(path)):
        os.makedirs(folder, exist_ok=True)
        created = create_unnamed(path, data)
    return created


def _size(_: None, path: str) -> int | None:
    try:
        return os.stat(path).st_size
    except FileNotFoundError:
        return None


def _remove(_: None, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def _write(_: None, path: str, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)


def _makedirs(_: None, folder: str) -> None:
    os.makedirs(folder, exist_ok=True)


def _link_new(_: None, source: str, destination: str) -> bool:
    """Move ``source`` to ``destination`` unless a file is there; whether it moved. A
    refused ``source`` stays where it is.

    A hard link refuses an existing name (EEXIST) in the same call that creates it, where
    a rename would replace it. Filesystems without hard links get a check and a rename,
    which two writers can race (same bytes either way).
    """
    try:
        os.link(source, destination)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno not in _NO_LINKS:
            raise
        if os.path.exists(destination):
            return False
        os.replace(source, destination)
        return True
    os.unlink(source)
    return True


_FICLONE = 0x40049409
"""Linux's ioctl that makes a file share another's blocks (btrfs, XFS, bcachefs)."""


def _clone_new(_: None, source: str, destination: str, temp: str) -> bool:
    """Copy ``source`` to ``destination`` in the kernel unless a file is there, staged at
    ``temp``; the caller removes ``temp`` on failure."""
    in_folder(None, LocalBackend.steps, temp, _clone, source, temp)
    return publish(None, LocalBackend.steps, temp, destination)


def _clone(_: None, source: str, temp: str) -> None:
    """Copy ``source`` to the new file ``temp`` in the kernel: a reflink where the
    filesystem shares blocks, else ``copy_file_range`` (or a plain copy across
    filesystems). FileNotFoundError if either is missing (``temp``'s folder: made and
    tried again)."""
    import shutil

    try:
        import fcntl  # not on Windows
    except ImportError:
        fcntl = None
    cloned = False
    with open(source, "rb") as reading, open(temp, "xb") as writing:
        if fcntl is not None:
            with contextlib.suppress(OSError):  # no shared blocks here
                fcntl.ioctl(writing.fileno(), _FICLONE, reading.fileno())
                cloned = True
    if not cloned:
        shutil.copyfile(source, temp)  # sendfile on Linux: in the kernel


def _hard_link(_: None, source: str, destination: str) -> bool | None:
    """Link ``destination`` to ``source`` unless a file is there; None where the
    filesystem (or a crossing between two) has no hard links."""
    try:
        os.link(source, destination)
    except FileExistsError:
        return False
    except OSError as error:
        if error.errno in _NO_LINKS or error.errno == errno.EXDEV:
            return None
        raise
    return True


LocalBackend.steps = Steps(_size, _remove, _write, _link_new, _makedirs, _files_with_mtimes)


class Local(ProtocolSpec):
    """Local files (fsspec's ``LocalFileSystem``)."""

    names = ("file", "local")
    filesystem = "fsspec.implementations.local.LocalFileSystem"
    backend = LocalBackend
