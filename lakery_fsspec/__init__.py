"""lakery_fsspec: one labox storage for every fsspec filesystem.

Everything importable from here is the public API; the underscore-named modules are
private.
"""

from lakery_fsspec._backends import Backend, register_backend
from lakery_fsspec._copy import CopyResult, copy_lake
from lakery_fsspec._errors import (
    IntegrityError,
    ReadOnlyStorageError,
    StorageUnavailableError,
)
from lakery_fsspec._gc import (
    GCRefusedError,
    GCResult,
    Tally,
    collect_garbage,
    restore_trash_run,
    trash_runs,
)
from lakery_fsspec._pointer import FsspecPointer
from lakery_fsspec._router import DEFAULT_TEMPLATE, PathTemplate, Router
from lakery_fsspec._storage import DEFAULT_CHUNK_SIZE, FsspecStorage
from lakery_fsspec._temp import TempPath
from lakery_fsspec._trash import TrashRun

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TEMPLATE",
    "Backend",
    "CopyResult",
    "FsspecPointer",
    "FsspecStorage",
    "GCRefusedError",
    "GCResult",
    "IntegrityError",
    "PathTemplate",
    "ReadOnlyStorageError",
    "Router",
    "StorageUnavailableError",
    "Tally",
    "TempPath",
    "TrashRun",
    "collect_garbage",
    "copy_lake",
    "register_backend",
    "restore_trash_run",
    "trash_runs",
]
