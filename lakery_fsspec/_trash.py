"""gc's folders under a storage root: the trash, where a sweep quarantines objects (one
folder per run), and the freshness markers that a write finding its content already
stored leaves for the sweep.

```
<root>/.lakery-trash/<run>.run          the run's stamp: its age is the run's, by the
                                         server's clock
<root>/.lakery-trash/<run>/<path>       a quarantined object, at its relative path
<root>/.lakery-fresh/<hash of path>     a write found <path> already stored (its age)
```

Run names are temp names (``<unix ms>-<uuid hex>``, ``_temp.py``): where the backend
reports no time, a run is aged by its writer's clock in the name. A run is kept while its
stamp is (written before the first object moves in, removed after the last is gone).
Neither folder is ever a candidate, and the walks of ``verify`` and ``copy`` skip both.
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
import posixpath
from typing import TYPE_CHECKING, NamedTuple

from labox.core.storage import Digest

from lakery_fsspec._temp import temp_age, temp_name

if TYPE_CHECKING:
    from lakery_fsspec._backends import Backend

__all__ = [
    "FRESH",
    "RESERVED",
    "TRASH",
    "Found",
    "TrashRun",
    "find_in_trash",
    "freshen",
    "kept_runs",
    "marker_name",
    "new_run",
    "object_digest",
    "prune",
    "restore_object",
    "run_names",
    "stamp_path",
]

TRASH = ".lakery-trash"
FRESH = ".lakery-fresh"
RESERVED = frozenset({TRASH, FRESH})
"""Folders directly under a root that hold gc's own objects, never the lake's."""

_STAMP = ".run"
_LOG = logging.getLogger("lakery_fsspec")


def new_run() -> str:
    """A new run's name (a temp name: its writer's time, then a unique part)."""
    return temp_name()


def stamp_path(root: str, run: str) -> str:
    """Where a run's stamp is."""
    return f"{root}/{TRASH}/{run}{_STAMP}"


def marker_name(path: str) -> str:
    """The marker's name for an object's relative path."""
    return hashlib.blake2b(path.encode(), digest_size=16).hexdigest()


def object_digest(path: str, size: int, data: bytes = b"") -> Digest:
    """A digest for moving or writing an object gc did not write: its size, and the
    content type its extension names (the metadata a restore may have to set again)."""
    guessed, encoding = mimetypes.guess_type(posixpath.basename(path))
    return {
        "content_type": guessed or "application/octet-stream",
        "content_encoding": encoding,
        "content_hash_algorithm": "sha256",
        "content_hash": hashlib.sha256(data).hexdigest(),
        "content_size": size,
    }


async def freshen(backend: Backend, root: str, path: str) -> None:
    """Record that a write found the object at ``path`` (relative to ``root``) already
    stored: one small put, which also refreshes the marker's age."""
    data = path.encode()
    marker = f"{root}/{FRESH}/{marker_name(path)}"
    await backend.put(marker, data, object_digest(marker, len(data), data))


class TrashRun(NamedTuple):
    """A sweep's folder in the trash: its name, and its age in seconds (by the server's
    clock where the backend reports one, else by the run name's)."""

    run: str
    age: float


def run_names(listed: list[str]) -> set[str]:
    """The runs among the entries of the trash folder: those with a stamp. (A run's stamp
    is written before its first object and removed after its last, so a run folder
    without one is empty: on local files and SFTP, an emptied folder stays.)"""
    names: set[str] = set()
    for entry in listed:
        name = posixpath.basename(entry.rstrip("/"))
        if name.endswith(_STAMP) and temp_age(run := name.removesuffix(_STAMP)) is not None:
            names.add(run)
    return names


async def kept_runs(backend: Backend, root: str) -> list[TrashRun]:
    """The runs in the trash under ``root``, oldest first."""
    try:
        stamps = await backend.list_aged(f"{root}/{TRASH}")
    except FileNotFoundError:
        return []
    runs: list[TrashRun] = []
    for path, seconds in stamps:
        for run in run_names([path]):
            runs.append(TrashRun(run, temp_age(run) or 0.0 if seconds is None else seconds))
    return sorted(runs, key=lambda kept: (-kept.age, kept.run))


class Found(NamedTuple):
    """An object found in the trash: its full path, its run and its size."""

    path: str
    run: str
    size: int


async def find_in_trash(backend: Backend, root: str, path: str) -> Found | None:
    """The newest copy of the object at relative ``path`` in the trash under ``root``:
    one listing of the trash, then one request per kept run until found. None also where
    these credentials may not look (a read-only account without listing rights)."""
    try:
        listed = [entry.name for entry in await backend.entries(f"{root}/{TRASH}")]
        for run in sorted(run_names(listed), reverse=True):  # newest first
            candidate = f"{root}/{TRASH}/{run}/{path}"
            size = await backend.size(candidate)
            if size is not None:
                return Found(candidate, run, size)
    except (FileNotFoundError, PermissionError):
        return None
    return None


async def prune(backend: Backend, folder: str) -> None:
    """Remove ``folder`` and the folders below it once they are empty (where folders
    exist: local files, SFTP, FTP, WebDAV), so that an emptied trash run leaves none."""
    if not backend.needs_dirs:
        return
    try:
        entries = await backend.entries(folder)
    except FileNotFoundError:
        return
    for entry in entries:
        if entry.kind == "directory":
            await prune(backend, f"{folder}/{entry.name}")
    await backend.remove_folder(folder)


async def restore_object(backend: Backend, trashed: str, final: str, size: int) -> bool:
    """Move a quarantined object back to ``final``, create-only (never over an object
    there: then the trashed copy is dropped); whether it was moved. FileNotFoundError if
    the trashed copy is gone."""
    moved = await backend.move(trashed, final, object_digest(final, size))
    _LOG.info("restored %s://%s from the trash (%s)", backend.protocol, final, trashed)
    return moved
