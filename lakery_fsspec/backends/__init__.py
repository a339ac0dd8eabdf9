"""Per-filesystem behaviour: what differs between local, memory, S3, GCS and Azure."""

from __future__ import annotations

from fsspec.spec import AbstractFileSystem

from lakery_fsspec.backends.azure import AzureBackend
from lakery_fsspec.backends.base import Backend, Writer, cleanup
from lakery_fsspec.backends.gcs import GCSBackend
from lakery_fsspec.backends.local import LocalBackend
from lakery_fsspec.backends.memory import MemoryBackend
from lakery_fsspec.backends.s3 import S3Backend
from lakery_fsspec.bridge import Bridge
from lakery_fsspec.loops import shared_loop_instances

__all__ = ["Backend", "Writer", "backend_class", "backend_for", "cleanup"]

_BACKENDS: dict[str, type[Backend]] = {
    "file": LocalBackend,
    "memory": MemoryBackend,
    "s3": S3Backend,
    "gcs": GCSBackend,
    "abfs": AzureBackend,
}


def backend_class(protocol: str) -> type[Backend]:
    """The backend class for a canonical protocol; the generic one for any other."""
    return _BACKENDS.get(protocol, Backend)


def backend_for(protocol: str, fs: AbstractFileSystem, timeout: float | None) -> Backend:
    """The backend for a filesystem whose canonical protocol is ``protocol``."""
    cls = backend_class(protocol)
    instances = None
    if cls.loop_native and fs.async_impl:
        instances = shared_loop_instances(fs, cls.connect, cls.disconnect, cls.copy_options)
    return cls(protocol, Bridge(fs, timeout=timeout, loop_instances=instances))
