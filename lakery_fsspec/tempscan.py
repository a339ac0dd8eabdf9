"""Listing a storage's temp objects with their ages (what ``gc --dry-run`` shows)."""

from __future__ import annotations

import posixpath
import time

from lakery_fsspec.bridge import Bridge
from lakery_fsspec.diagnose import diagnose
from lakery_fsspec.storage import FsspecStorage
from lakery_fsspec.temp import temp_age

__all__ = ["list_temp"]


async def list_temp(storage: FsspecStorage, older_than: float = 0.0) -> list[tuple[str, float]]:
    """``(path, age in seconds)`` of the temp objects at least ``older_than`` seconds old.

    These are exactly the objects ``storage.cleanup_temp(older_than)`` would delete: names
    the storage creates under its ``temp_prefix``, oldest first. A root or temp folder that
    does not exist yet has none; a missing bucket or container raises FileNotFoundError.
    """
    fs = storage.location.filesystems()[1]
    folder = f"{storage.location.root}/{storage.temp_prefix}"
    fs.invalidate_cache(folder)
    try:
        paths = [str(path) for path in await Bridge(fs).call("ls", folder, detail=False)]
    except FileNotFoundError as error:
        protocol = storage.location.protocol
        if diagnose(error, url=storage.location.url, protocol=protocol).kind == "no-bucket":
            raise
        return []
    now = time.time()
    found: list[tuple[str, float]] = []
    for path in paths:
        age = temp_age(posixpath.basename(path), now)
        if age is not None and age >= older_than:
            found.append((path, age))
    return sorted(found, key=lambda item: -item[1])
