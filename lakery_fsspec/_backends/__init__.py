"""Per-filesystem behaviour (one module per protocol) and the registry that picks it."""

from __future__ import annotations

from fsspec.spec import AbstractFileSystem

from lakery_fsspec._backends.azure import AzureBackend
from lakery_fsspec._backends.base import Backend, cleanup
from lakery_fsspec._backends.cached import CacheBackend
from lakery_fsspec._backends.ftp import FTPBackend
from lakery_fsspec._backends.gcs import GCSBackend
from lakery_fsspec._backends.local import LocalBackend
from lakery_fsspec._backends.memory import MemoryBackend
from lakery_fsspec._backends.obstore import ObstoreBackend
from lakery_fsspec._backends.s3 import S3Backend
from lakery_fsspec._backends.sftp import SFTPBackend
from lakery_fsspec._backends.sshfs import SSHFSBackend
from lakery_fsspec._backends.webdav import WebdavBackend
from lakery_fsspec._bridge import Bridge
from lakery_fsspec._loops import shared_loop_instances

__all__ = ["Backend", "backend_class", "backend_for", "cleanup", "reader_for", "register_backend"]

_REGISTRY: dict[str, list[type[Backend]]] = {}
"""Every protocol name a registered backend serves -> those backends, newest first."""
_ANY_PROTOCOL = "*"
"""Where backends of a filesystem class for any protocol are registered."""


def register_backend(backend: type[Backend]) -> type[Backend]:
    """Use ``backend`` for every protocol it names in ``backend.protocols``.

    For a third-party filesystem: subclass :class:`Backend`, set ``protocols`` (the first
    name is the one pointers record; the filesystem must answer to it in fsspec) and
    ``filesystem`` (the class it drives, if it needs one implementation of the protocol),
    override what that filesystem does differently, and register it once at import. It
    replaces a backend registered before for the same protocol and filesystem. A backend
    with a ``filesystem`` and no ``protocols`` drives that class under whichever protocol
    it is registered in fsspec (an adapter such as obstore's), where no backend of the
    protocol serves the class. Usable as a class decorator.
    """
    if not backend.protocols and backend.filesystem is None:
        msg = (
            f"{backend.__name__} names no protocol and no filesystem class; set protocols, "
            "e.g. ('myfs',), or filesystem, e.g. 'mypackage.MyFileSystem'."
        )
        raise ValueError(msg)
    for name in backend.protocols or (_ANY_PROTOCOL,):
        others = [b for b in _REGISTRY.get(name, []) if b.filesystem != backend.filesystem]
        _REGISTRY[name] = [backend, *others]
    return backend


for _builtin in (
    LocalBackend,
    MemoryBackend,
    S3Backend,
    GCSBackend,
    AzureBackend,
    FTPBackend,
    SFTPBackend,
    WebdavBackend,
):
    register_backend(_builtin)
register_backend(SSHFSBackend)
register_backend(CacheBackend)  # the read side of simplecache:: and filecache::
register_backend(ObstoreBackend)  # obstore's adapter, under any protocol it is registered for


def backend_class(
    protocol: str, filesystem: type[AbstractFileSystem] | None = None
) -> type[Backend]:
    """The backend registered for a protocol name that drives ``filesystem`` (a class),
    or the newest one for the name when no class is given; the generic one otherwise.

    Backends are chosen by what the filesystem is, not only by its protocol's name: with
    another implementation registered for ``s3`` (obstore's adapter, say), S3's backend
    steps aside and a backend of that class for any protocol, or the generic one, serves it.
    """
    for backend in _REGISTRY.get(protocol, []):
        if filesystem is None or backend.serves(filesystem):
            return backend
    if filesystem is not None:
        for backend in _REGISTRY.get(_ANY_PROTOCOL, []):
            if backend.serves(filesystem):
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


def reader_for(protocol: str, fs: AbstractFileSystem, timeout: float | None) -> Backend:
    """The backend that reads through ``fs``, the outer layer of a chained URL (a cache)
    over a target whose canonical protocol is ``protocol``."""
    names = fs.protocol
    cls = backend_class(names if isinstance(names, str) else names[0], type(fs))
    # The layer's reads are the target's requests: the target's client's errors that mean
    # "unavailable" (a dead FTP connection) mean it here too, never "not found".
    target = backend_class(protocol, type(getattr(fs, "fs", fs)))

    def transient(error: BaseException) -> bool:
        return cls.transient(error) or target.transient(error)

    return cls(protocol, Bridge(fs, timeout=timeout, transient=transient))
