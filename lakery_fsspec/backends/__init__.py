"""Per-filesystem behaviour (one module per protocol) and the registry that picks it."""

from __future__ import annotations

from fsspec.spec import AbstractFileSystem

from lakery_fsspec.backends.azure import AzureBackend
from lakery_fsspec.backends.base import Backend, cleanup
from lakery_fsspec.backends.gcs import GCSBackend
from lakery_fsspec.backends.local import LocalBackend
from lakery_fsspec.backends.memory import MemoryBackend
from lakery_fsspec.backends.s3 import S3Backend
from lakery_fsspec.bridge import Bridge
from lakery_fsspec.loops import shared_loop_instances

__all__ = ["Backend", "backend_class", "backend_for", "cleanup", "register_backend"]

_REGISTRY: dict[str, type[Backend]] = {}
"""Every protocol name a registered backend serves -> that backend."""


def register_backend(backend: type[Backend]) -> type[Backend]:
    """Use ``backend`` for every protocol it names in ``backend.protocols``.

    For a third-party filesystem: subclass :class:`Backend`, set ``protocols`` (the first
    name is the one pointers record; the filesystem must answer to it in fsspec) and
    override what its filesystem does differently, then register it once at import. It
    replaces any backend registered before for those names. Usable as a class decorator.
    """
    if not backend.protocols:
        msg = f"{backend.__name__}.protocols names no protocol; set it, e.g. ('myfs',)."
        raise ValueError(msg)
    for name in backend.protocols:
        _REGISTRY[name] = backend
    return backend


for _builtin in (LocalBackend, MemoryBackend, S3Backend, GCSBackend, AzureBackend):
    register_backend(_builtin)


def backend_class(protocol: str) -> type[Backend]:
    """The backend registered for a protocol name; the generic one for any other."""
    return _REGISTRY.get(protocol, Backend)


def backend_for(protocol: str, fs: AbstractFileSystem, timeout: float | None) -> Backend:
    """The backend for a filesystem whose canonical protocol is ``protocol``."""
    cls = backend_class(protocol)
    instances = None
    if cls.loop_native and fs.async_impl:
        instances = shared_loop_instances(fs, cls.connect, cls.disconnect, cls.copy_options)
    return cls(protocol, Bridge(fs, timeout=timeout, loop_instances=instances))
