"""Per-protocol behaviour (one module per protocol) and the registry that picks it."""

from __future__ import annotations

from typing import Any

from fsspec.registry import known_implementations, registry
from fsspec.spec import AbstractFileSystem

from lakery_fsspec._backends.azure import Azure
from lakery_fsspec._backends.base import Backend, Entry, cleanup
from lakery_fsspec._backends.cached import Cache
from lakery_fsspec._backends.diagnostics import Diagnosis, Diagnostics
from lakery_fsspec._backends.ftp import FTP
from lakery_fsspec._backends.gcs import GCS
from lakery_fsspec._backends.local import Local
from lakery_fsspec._backends.memory import Memory
from lakery_fsspec._backends.obstore import Obstore
from lakery_fsspec._backends.s3 import S3
from lakery_fsspec._backends.sftp import SFTP
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.sshfs import SSHFS
from lakery_fsspec._backends.webdav import Webdav
from lakery_fsspec._bridge import Bridge

__all__ = [
    "Backend",
    "Diagnosis",
    "Diagnostics",
    "Entry",
    "ProtocolSpec",
    "cleanup",
    "names_of",
    "open_reader",
    "register_protocol",
    "spec_for",
]

_REGISTRY: dict[str, list[type[ProtocolSpec]]] = {}
"""Every protocol name a registered spec serves -> those specs, newest first."""
_ANY_PROTOCOL = "*"
"""Where specs of a filesystem class for any protocol are registered."""


def register_protocol(spec: type[ProtocolSpec]) -> type[ProtocolSpec]:
    """Use ``spec`` (and its backend) for every protocol it names in ``spec.names``.

    For a third-party filesystem: subclass :class:`Backend` where the filesystem can do
    better than the generic behaviour, subclass :class:`ProtocolSpec` to name its
    protocols (the first is the one pointers record; the filesystem must answer to it in
    fsspec), its ``backend`` and, if it needs one implementation of the protocol, its
    ``filesystem``; register it once at import. It replaces a spec registered before for
    the same protocol and filesystem. A spec with a ``filesystem`` and no ``names``
    drives that class under whichever protocol it is registered in fsspec (an adapter
    such as obstore's). Usable as a class decorator.
    """
    if not spec.names and spec.filesystem is None:
        msg = (
            f"{spec.__name__} names no protocol and no filesystem class; set names, "
            "e.g. ('myfs',), or filesystem, e.g. 'mypackage.MyFileSystem'."
        )
        raise ValueError(msg)
    for name in spec.names or (_ANY_PROTOCOL,):
        others = [s for s in _REGISTRY.get(name, []) if s.filesystem != spec.filesystem]
        _REGISTRY[name] = [spec, *others]
    return spec


for _builtin in (Local, Memory, S3, GCS, Azure, FTP, SFTP, SSHFS, Webdav, Cache, Obstore):
    register_protocol(_builtin)


def spec_for(
    protocol: str, filesystem: type[AbstractFileSystem] | None = None
) -> type[ProtocolSpec]:
    """The spec for a protocol name and the fsspec class that serves it: among the specs
    registered for the name, the newest that drives the class; else one of the class for
    any protocol; else the generic one.

    Without a class, the one fsspec would hand out for the name decides (its dotted path,
    so that a protocol whose package is missing still names the right spec and extra:
    ``sftp`` is paramiko's SFTP, whatever other specs serve the name). So an s3 URL
    served by another implementation (obstore's adapter) gets that implementation's spec,
    never S3's.
    """
    served: type[Any] | str | None = filesystem or _fsspec_class(protocol)
    for spec in _REGISTRY.get(protocol, []):
        if served is None or spec.serves(served):
            return spec
    if served is not None:
        for spec in _REGISTRY.get(_ANY_PROTOCOL, []):
            if spec.serves(served):
                return spec
    return ProtocolSpec


def names_of(protocol: str) -> tuple[str, ...]:
    """All names of the protocol ``protocol`` is a name of (``gs`` -> ``("gcs", "gs")``),
    whichever implementation serves it; empty if no spec names it."""
    specs = _REGISTRY.get(protocol)
    return specs[0].names if specs else ()


def _fsspec_class(protocol: str) -> type[Any] | str | None:
    """The class fsspec hands out for ``protocol`` if imported, else its dotted path."""
    if protocol in registry:
        return registry[protocol]
    known = known_implementations.get(protocol)
    return known["class"] if known else None


def open_reader(
    protocol: str, fs: AbstractFileSystem, target: type[ProtocolSpec], timeout: float | None
) -> Backend:
    """The backend that reads through ``fs``, the outer layer of a chained URL (a cache)
    over a target of ``target``'s protocol, whose canonical name is ``protocol``."""
    names = fs.protocol
    layer = spec_for(names if isinstance(names, str) else names[0], type(fs))

    # The layer's reads are the target's requests: the target's client's errors that mean
    # "unavailable" (a dead FTP connection) mean it here too, never "not found".
    def transient(error: BaseException) -> bool:
        return layer.transient(error) or target.transient(error)

    return layer.backend(protocol, Bridge(fs, timeout=timeout, transient=transient))
