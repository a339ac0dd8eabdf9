"""Per-filesystem behaviour (one module per protocol) and the registry that picks it."""

from __future__ import annotations

from fsspec.spec import AbstractFileSystem

from lakery_fsspec.backends.azure import AzureBackend
from lakery_fsspec.backends.base import Backend, cleanup
from lakery_fsspec.backends.gcs import GCSBackend
from lakery_fsspec.backends.local import LocalBackend
from lakery_fsspec.backends.memory import MemoryBackend
from lakery_fsspec.backends.s3 import S3Backend
from lakery_fsspec.backends.webdav import WebdavBackend
from lakery_fsspec.bridge import Bridge
from lakery_fsspec.loops import shared_loop_instances

__all__ = ["Backend", "backend_class", "backend_for", "cleanup", "register_backend"]

_REGISTRY: dict[str, list[type[Backend]]] = {}
"""Every protocol name a registered backend serves -> those backends, newest first."""


def register_backend(backend: type[Backend]) -> type[Backend]:
    """Use ``backend`` for every protocol it names in ``backend.protocols``.

    For a third-party filesystem: subclass :class:`Backend`, set ``protocols`` (the first
    name is the one pointers record; the filesystem must answer to it in fsspec) and
    ``filesystem`` (the class it drives, if it needs one implementation of the protocol),
    override what that filesystem does differently, and register it once at import. It
    replaces a backend registered before for the same protocol and filesystem. Usable as
    a class decorator.
    """
    if not backend.protocols:
        msg = f"{backend.__name__}.protocols names no protocol; set it, e.g. ('myfs',)."
        raise ValueError(msg)
    for name in backend.protocols:
        others = [b for b in _REGISTRY.get(name, []) if b.filesystem != backend.filesystem]
        _REGISTRY[name] = [backend, *others]
    return backend


for _builtin in (
    LocalBackend,
    MemoryBackend,
    S3Backend,
    GCSBackend,
    AzureBackend,
    WebdavBackend,
):
    register_backend(_builtin)


def backend_class(
    protocol: str, filesystem: type[AbstractFileSystem] | None = None
) -> type[Backend]:
    """The backend registered for a protocol name that drives ``filesystem`` (a class),
    or the newest one for the name when no class is given; the generic one otherwise.

    Backends are chosen by what the filesystem is, not only by its protocol's name: with
    another implementation registered for ``s3`` (obstore's adapter, say), S3's backend
    steps aside and the generic one serves it.
    """
    for backend in _REGISTRY.get(protocol, []):
        if filesystem is None or backend.serves(filesystem):
            return backend
    return Backend


def backend_for(protocol: str, fs: AbstractFileSystem, timeout: float | None) -> Backend:
    """The backend for a filesystem whose canonical protocol is ``protocol``."""
    cls = backend_class(protocol, type(fs))
    instances = None
    if cls.loop_native and fs.async_impl:
        instances = shared_loop_instances(fs, cls.connect, cls.disconnect, cls.copy_options)
    bridge = Bridge(fs, timeout=timeout, loop_instances=instances, transient=cls.transient)
    return cls(protocol, bridge)
