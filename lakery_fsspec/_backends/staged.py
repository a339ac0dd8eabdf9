"""File servers' data path, written once: a blob is written to a temp file and renamed
into place without replacing anything, a folder is made when a step says it is missing,
and temps are aged by the server's clock.

Each protocol (local files, SFTP through paramiko or asyncssh, FTP, WebDAV) supplies a
few primitives: write a file, rename without replacing, make folders, list files with
their modification times, besides ``Backend``'s ``size`` and ``remove``. They are
coroutines (``StagedFiles``: asyncssh on its channel, WebDAV's requests each in a worker
thread) or blocking functions of a connection (``BlockingFiles``: local files,
paramiko, FTP), whose blob writes run in one worker-thread hop through the algorithm's
blocking twin at the end of this module.
"""

from __future__ import annotations

import posixpath
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, TypeVar

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.clock import Aged, age
from lakery_fsspec._temp import temp_name

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = [
    "CHECK_FIRST_SIZE",
    "BlockingFiles",
    "StagedFiles",
    "Steps",
    "create_staged",
    "in_folder",
    "publish",
    "rename_in_folder",
]

T = TypeVar("T")

CHECK_FIRST_SIZE = 2**20
"""Blobs at least this large are looked for before they are written: a stat costs less
than uploading a copy the rename then refuses. Smaller ones are written straight away,
and the create-only rename tells whether they were stored already."""


class StagedFiles(Backend):
    """A file server: a blob is written to a temp file and renamed into place by a rename
    that never replaces (a refusal is "already stored"), so it is complete at its path or
    absent. A folder is made only when a step says it is missing, and the step tried once
    more.

    Subclasses supply ``_write_file``, ``_rename_new``, ``_make_folders`` and (for
    ``list_aged``) ``_files_with_mtimes``, with ``size`` and ``remove``.
    """

    # --- primitives -----------------------------------------------------------------------

    async def _write_file(self, path: str, data: bytes, digest: Digest | None = None) -> None:
        """Write ``data`` as the whole file at ``path``, over any file there;
        FileNotFoundError if its folder is missing."""
        raise NotImplementedError

    async def _rename_new(self, source: str, destination: str) -> bool:
        """Rename ``source`` to ``destination`` unless a file is there (never replacing
        it); whether it moved. A refused ``source`` stays where it is; FileNotFoundError
        if the destination's folder is missing."""
        raise NotImplementedError

    async def _make_folders(self, folder: str) -> None:
        """Make ``folder`` and its missing parents; nothing if it exists."""
        raise NotImplementedError

    async def _files_with_mtimes(self, folder: str) -> list[tuple[str, float | None]]:
        """The files directly in ``folder`` (full paths) with their modification times
        by the server's clock (None where unknown); FileNotFoundError if no folder."""
        raise NotImplementedError

    # --- the algorithm --------------------------------------------------------------------

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        """A temp file renamed into place: the rename refuses an existing object (a
        refused blob's size is the storage's to check)."""
        if len(data) >= CHECK_FIRST_SIZE and await self.exists(path):
            return False
        try:
            await self._write_in_folder(temp, data, digest)
            moved = await self._rename_in_folder(temp, path)
        except BaseException:
            await self.discard(temp)
            raise
        if not moved:
            await self.remove(temp)  # refused: already stored
        return moved

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        await self._write_in_folder(path, data, digest)

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        """A create-only rename; on a refusal, a damaged object there is replaced."""
        return await self._move_healing(
            lambda: self._rename_in_folder(source, destination), source, destination, digest
        )

    async def _write_in_folder(self, path: str, data: bytes, digest: Digest | None) -> None:
        """``_write_file``, making the folder if it is missing."""
        await self._making_folder(path, lambda: self._write_file(path, data, digest))

    async def _rename_in_folder(self, source: str, destination: str) -> bool:
        """``_rename_new``, making the destination's folder if it is missing."""
        return await self._making_folder(destination, lambda: self._rename_new(source, destination))

    async def _making_folder(self, path: str, step: Callable[[], Awaitable[T]]) -> T:
        """``step()`` (a write to ``path``), run once more after making ``path``'s folder
        if it said the folder is missing: a folder costs requests only on the first write
        under it."""
        try:
            return await step()
        except FileNotFoundError:
            await self._make_folders(posixpath.dirname(path))
        return await step()

    async def list_aged(self, folder: str) -> list[Aged]:
        """The files in ``folder``, aged by the server's clock: a probe file written just
        before the listing is in it, and its modification time is the server's "now".
        The probe is named like a temp, so a crash before its removal leaves nothing that
        clean-up misses; an account that may not write gets the writer's clock in the
        names."""
        probe: str | None = f"{folder.rstrip('/')}/{temp_name()}"
        try:
            await self._write_file(probe, b"")
        except (PermissionError, FileNotFoundError):  # read-only, or no folder: listing tells
            probe = None
        try:
            listed = dict(await self._files_with_mtimes(folder))
        finally:
            if probe is not None:
                await self.discard(probe)
        now = listed.pop(probe, None) if probe is not None else None
        return [
            Aged(path, None if now is None or then is None else age(now, then))
            for path, then in listed.items()
        ]


class Steps(NamedTuple):
    """A file server's primitives as blocking functions, each taking the connection to
    run on first (see ``StagedFiles`` for what each does)."""

    size: Callable[[Any, str], int | None]
    remove: Callable[[Any, str], None]
    write: Callable[[Any, str, bytes], None]
    rename_new: Callable[[Any, str, str], bool]
    make_folders: Callable[[Any, str], None]
    files_with_mtimes: Callable[[Any, str], list[tuple[str, float | None]]]


class BlockingFiles(StagedFiles):
    """A file server whose primitives are the blocking ``steps``, run in worker threads
    on a connection of the protocol's (a pooled one; local files have none). A blob is
    written in one worker-thread hop, on one connection; every other primitive is a hop
    of its own."""

    steps: ClassVar[Steps]

    def _on_connection(self, step: Callable[..., T], /, *args: Any) -> T:
        """``step(connection, *args)`` on a connection of the protocol's (blocking)."""
        raise NotImplementedError

    async def _run(self, step: Callable[..., T], /, *args: Any) -> T:
        return await self.io.thread(partial(self._on_connection, step, *args))

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        """``StagedFiles.create`` in one worker-thread hop."""
        try:
            return await self._run(create_staged, self.steps, path, data, temp)
        except BaseException:
            await self.discard(temp)
            raise

    async def size(self, path: str) -> int | None:
        return await self._run(self.steps.size, path)

    async def remove(self, path: str) -> None:
        await self._run(self.steps.remove, path)

    async def _write_file(self, path: str, data: bytes, digest: Digest | None = None) -> None:
        await self._run(self.steps.write, path, data)

    async def _rename_new(self, source: str, destination: str) -> bool:
        return await self._run(self.steps.rename_new, source, destination)

    async def _make_folders(self, folder: str) -> None:
        await self._run(self.steps.make_folders, folder)

    async def _files_with_mtimes(self, folder: str) -> list[tuple[str, float | None]]:
        return await self._run(self.steps.files_with_mtimes, folder)

    # The folder rule in the same hop and on the same connection as its step.

    async def _write_in_folder(self, path: str, data: bytes, digest: Digest | None) -> None:
        await self._run(in_folder, self.steps, path, self.steps.write, path, data)

    async def _rename_in_folder(self, source: str, destination: str) -> bool:
        return await self._run(rename_in_folder, self.steps, source, destination)


# --- the algorithm's blocking twin, on one connection -------------------------------------


def create_staged(connection: Any, steps: Steps, path: str, data: bytes, temp: str) -> bool:
    """``StagedFiles.create``, blocking; the caller removes ``temp`` on failure."""
    if len(data) >= CHECK_FIRST_SIZE and steps.size(connection, path) is not None:
        return False
    in_folder(connection, steps, temp, steps.write, temp, data)
    return publish(connection, steps, temp, path)


def publish(connection: Any, steps: Steps, temp: str, path: str) -> bool:
    """Rename the complete ``temp`` to ``path`` unless a file is there; whether it
    moved. A refused ``temp`` is removed."""
    moved = rename_in_folder(connection, steps, temp, path)
    if not moved:
        steps.remove(connection, temp)  # refused: already stored
    return moved


def rename_in_folder(connection: Any, steps: Steps, source: str, destination: str) -> bool:
    """``steps.rename_new``, making the destination's folder if it is missing."""
    return in_folder(connection, steps, destination, steps.rename_new, source, destination)


def in_folder(connection: Any, steps: Steps, path: str, step: Callable[..., T], *args: Any) -> T:
    """``step(connection, *args)`` (a write to ``path``), run once more after making
    ``path``'s folder if it said the folder is missing (``StagedFiles._making_folder``)."""
    try:
        return step(connection, *args)
    except FileNotFoundError:
        steps.make_folders(connection, posixpath.dirname(path))
    return step(connection, *args)
