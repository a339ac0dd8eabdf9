"""lakery_fsspec: one labox storage for every fsspec filesystem.

Everything importable from here is the public API; the underscore-named modules are
private.
"""

from lakery_fsspec._backends import Backend, Entry, ProtocolSpec, register_protocol
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
from lakery_fsspec._verify import Problem, Verification

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TEMPLATE",
    "Backend",
    "CopyResult",
    "Entry",
    "FsspecPointer",
    "FsspecStorage",
    "GCRefusedError",
    "GCResult",
    "IntegrityError",
    "PathTemplate",
    "Problem",
    "ProtocolSpec",
    "ReadOnlyStorageError",
    "Router",
    "StorageUnavailableError",
    "Tally",
    "TempPath",
    "TrashRun",
    "Verification",
    "collect_garbage",
    "copy_lake",
    "register_protocol",
    "restore_trash_run",
    "trash_runs",
]
