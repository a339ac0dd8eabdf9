"""lakery_fsspec: one labox storage for every fsspec filesystem.

Everything importable from here is the public API; every other module is internal.
"""

from lakery_fsspec.backends import Backend, register_backend
from lakery_fsspec.errors import (
    IntegrityError,
    ReadOnlyStorageError,
    StorageUnavailableError,
)
from lakery_fsspec.pointer import FsspecPointer
from lakery_fsspec.router import DEFAULT_TEMPLATE, PathTemplate, Router
from lakery_fsspec.storage import DEFAULT_CHUNK_SIZE, FsspecStorage
from lakery_fsspec.temp import TempPath

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TEMPLATE",
    "Backend",
    "FsspecPointer",
    "FsspecStorage",
    "IntegrityError",
    "PathTemplate",
    "ReadOnlyStorageError",
    "Router",
    "StorageUnavailableError",
    "TempPath",
    "register_backend",
]
