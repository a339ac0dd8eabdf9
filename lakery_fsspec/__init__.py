"""lakery_fsspec: one labox storage for every fsspec filesystem."""

from lakery_fsspec.errors import (
    IntegrityError,
    ReadOnlyStorageError,
    StorageUnavailableError,
)
from lakery_fsspec.pointer import FsspecPointer
from lakery_fsspec.router import DEFAULT_TEMPLATE, PathTemplate, Router
from lakery_fsspec.storage import DEFAULT_CHUNK_SIZE, FsspecStorage

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_TEMPLATE",
    "FsspecPointer",
    "FsspecStorage",
    "IntegrityError",
    "PathTemplate",
    "ReadOnlyStorageError",
    "Router",
    "StorageUnavailableError",
]
