"""Parsing storage URLs: which filesystem, which root, and the filesystem itself (lazily)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.implementations.dirfs import DirFileSystem
from fsspec.spec import AbstractFileSystem

from lakery_fsspec._backends import ProtocolSpec, names_of, spec_for
from lakery_fsspec._paths import path_problem

__all__ = [
    "Location",
    "canonical_or_as_is",
    "canonical_protocol",
    "filesystem_class",
    "open_filesystem",
    "redacted",
    "spec_of",
]


def filesystem_class(protocol: str) -> type[AbstractFileSystem]:
    """Import the fsspec class for ``protocol``; ValueError says what to install if missing."""
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as error:
        extra = spec_for(protocol).extra
        fix = f"pip install 'lakery-fsspec[{extra}]'" if extra else "install the package"
        msg = f"Protocol {protocol!r} needs a package that is not installed ({error}); {fix}."
        raise ValueError(msg) from None
    except ValueError:
        known = ", ".join(sorted(fsspec.available_protocols()))
        msg = (
            f"Unknown fsspec protocol {protocol!r}. Use a local path or a URL with one of: "
            f"{known} (or register your own with fsspec.register_implementation)."
        )
        raise ValueError(msg) from None


def canonical_protocol(protocol: str) -> str:
    """The one name recorded in pointers for every spelling of a protocol (gs -> gcs):
    the first name of its spec, else the first name of its filesystem class.

    The spec is looked up by the name given first: a class that names no protocol of
    its own (sshfs) is stamped by fsspec with whichever name loaded it first."""
    cls = filesystem_class(protocol)
    if own := spec_for(protocol, cls).names:
        return own[0]
    names = cls.protocol
    first = names if isinstance(names, str) else names[0]
    return (names_of(first) or (first,))[0]


def canonical_or_as_is(protocol: str) -> str:
    """A pointer's protocol by its canonical name (``ssh`` -> ``sftp``), so that a storage
    reads its own pointers whichever spelling wrote them; unknown names, and those whose
    package is not installed, stay as they are (and are refused)."""
    try:
        return canonical_protocol(protocol)
    except ValueError:
        return protocol


class Location:
    """A storage URL resolved, once, to its target's protocol spec (and so its backend),
    canonical protocol and root, with its filesystems on demand.

    For a chained URL (``simplecache::s3://bucket/lake``) the target is the innermost
    filesystem; reads go through the whole chain, writes straight to the target.
    """

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping[str, Any]) -> None:
        url = os.fspath(url)
        if not isinstance(url, str) or not url.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = f"The storage URL must be a non-empty string or path, not {url!r}."
            raise ValueError(msg)
        self.url = url
        layers = [layer for layer in url.split("::") if layer]
        for index, layer in enumerate(layers):
            filesystem_class(_layer_protocol(layer, last=index == len(layers) - 1))
        # dir:: layers only prefix paths: folded into the URL they wrap, so that the root
        # is the real folder on the target and reads and writes skip DirFileSystem.
        self.layers, options = _without_dirs(url, layers, dict(storage_options))
        inner = self.layers[-1]
        scheme = split_protocol(inner)[0] or "file"
        self.protocol = canonical_protocol(scheme)
        fs_class = filesystem_class(scheme)
        self.spec = spec_for(self.protocol, fs_class)
        """What the target's protocol is: its names, client, backend and diagnostics."""
        # What the target's URL itself says (host, port, user, password:
        # sftp://user:pw@host/path) counts, under the options given explicitly.
        self.root, from_url = self.spec.split_url(fs_class, inner, options)
        if not self.root.strip("/"):
            msg = (
                f"The storage URL {url!r} names no root folder or bucket; "
                f"write it as e.g. {scheme}://my-bucket/prefix or a local directory path."
            )
            raise ValueError(msg)
        self._scheme = scheme
        self._options = {**from_url, **options}

    @property
    def options(self) -> dict[str, Any]:
        """The target's options: what the URL says (host, port, user, password) under the
        storage options given explicitly."""
        return dict(self._options)

    @property
    def chained(self) -> bool:
        """Whether the URL chains caching or other layers in front of the target."""
        return len(self.layers) > 1

    def filesystems(self) -> tuple[AbstractFileSystem, AbstractFileSystem]:
        """``(read_fs, target_fs)``, from fsspec's instance cache where it has them.

        Called on use, never at construction (which does no I/O); a Location holds no
        filesystem, so it pickles and survives a fork as plain configuration.
        """
        if not self.chained:
            target = fsspec.filesystem(self._scheme, **self.spec.filesystem_options(self.options))
            return target, target
        # Options keyed by a layer's protocol go to that layer, the rest to the target.
        layer_names = {_layer_protocol(layer) for layer in self.layers[:-1]}
        options = {k: v for k, v in self._options.items() if k in layer_names}
        target_options = {k: v for k, v in self._options.items() if k not in layer_names}
        options[self._scheme] = self.spec.filesystem_options(target_options)
        read_fs, _ = url_to_fs("::".join(self.layers), **options)
        return read_fs, _innermost(read_fs)

    def __repr__(self) -> str:
        return f"Location({self.protocol!r}, {self.root!r})"


def open_filesystem(protocol: str, options: Mapping[str, Any]) -> AbstractFileSystem:
    """The fsspec filesystem for ``protocol`` with the user's options plus what its
    spec needs (raw, never decompressed GCS reads, say)."""
    return fsspec.filesystem(protocol, **spec_of(protocol).filesystem_options(dict(options)))


def spec_of(protocol: str) -> type[ProtocolSpec]:
    """The spec of the filesystem class fsspec hands out for the name ``protocol`` now
    (SFTP: paramiko's, or sshfs's where it was registered for the name), without
    importing it: what a client reads from the environment at import is set before."""
    return spec_for(protocol)


def _innermost(fs: AbstractFileSystem) -> AbstractFileSystem:
    while isinstance(inner := getattr(fs, "fs", None), AbstractFileSystem):
        fs = inner
    return fs


def _layer_protocol(layer: str, *, last: bool = False) -> str:
    """The protocol of one layer of a chained URL: ``simplecache``, ``dir://sub``, or
    the last one's (a URL, or a local path)."""
    return split_protocol(layer)[0] or ("file" if last else layer)


def _without_dirs(
    url: str, layers: list[str], options: dict[str, Any]
) -> tuple[list[str], dict[str, Any]]:
    """``layers`` and ``options`` with every DirFileSystem layer folded into the URL it
    wraps: ``dir://sub::s3://bucket/base`` is ``s3://bucket/base/sub``, and ``dir::X`` is
    ``X``. The last layer, ``dir://sub`` alone or at the end of a chain, wraps the
    folder its options name: ``{"path": "bucket/base", "target_protocol": "s3",
    "target_options": {...}}``, which become the target's URL and options."""
    layers = list(layers)
    index = len(layers) - 1
    while index >= 0:
        layer = layers[index]
        protocol = _layer_protocol(layer, last=index == len(layers) - 1)
        if not issubclass(filesystem_class(protocol), DirFileSystem):
            index -= 1
            continue
        sub = _dir_subfolder(url, layer)
        if index == len(layers) - 1:  # the innermost: the target is in its options
            names = {_layer_protocol(other) for other in layers[:index]}
            layered = {k: v for k, v in options.items() if k in names}
            own = {k: v for k, v in options.items() if k not in names}
            target, options = _dir_target(url, protocol, own)
            options.update(layered)
            layers[index] = f"{target}/{sub}" if sub else target
        else:
            own = options.pop(protocol, None) or {}
            if {k: v for k, v in own.items() if k not in _UNIVERSAL}:
                msg = (
                    f"In {url!r} the {protocol}:: layer wraps the URL after it; give its "
                    f"folder in that URL, not in storage_options[{protocol!r}]."
                )
                raise ValueError(msg)
            wrapped = layers[index + 1]
            if sub:
                layers[index + 1] = f"{wrapped.rstrip('/')}/{sub}"
            del layers[index]
        index -= 1
    return layers, options


_UNIVERSAL = frozenset(
    {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "max_paths"}
)
"""Options every fsspec filesystem accepts (its instance cache and listings cache)."""


def _dir_subfolder(url: str, layer: str) -> str:
    """The folder a ``dir://sub`` layer names below the folder it wraps ("" for ``dir::``)."""
    if "://" not in layer:
        return ""
    sub = str(DirFileSystem._strip_protocol(layer)).strip("/")
    if sub and (problem := path_problem(sub)):
        msg = f"The folder {sub!r} in {url!r} must be a relative path, but {problem}."
        raise ValueError(msg)
    return sub


def _dir_target(url: str, protocol: str, options: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The URL of the folder an innermost ``dir://`` layer wraps, from its options, and
    the options of the filesystem it wraps."""
    options = dict(options)
    path = options.pop("path", None) or options.pop("fo", None)
    target_protocol = options.pop("target_protocol", None) or "file"
    target_options = dict(options.pop("target_options", None) or {})
    for name in _UNIVERSAL & options.keys():  # the wrapped filesystem's instance, then
        target_options.setdefault(name, options.pop(name))
    if "fs" in options or not isinstance(path, str) or not path.strip("/"):
        msg = (
            f"{url!r}: a {protocol}:// storage needs the folder it wraps as a URL, "
            f"e.g. {protocol}://sub::s3://bucket/base (or storage_options={{'path': "
            "'bucket/base', 'target_protocol': 's3', 'target_options': {...}}); a "
            "filesystem instance (fs=...) cannot be stored in a pointer or pickled."
        )
        raise ValueError(msg)
    if options:
        msg = f"{url!r}: unknown {protocol}:// options {sorted(options)}; give the wrapped "
        msg += "filesystem's options as target_options."
        raise ValueError(msg)
    if "://" in path:  # a URL names its own protocol (and host: ftp://host:port/base)
        return path, dict(target_options)
    cls = filesystem_class(target_protocol)
    return f"{target_protocol}://{cls._strip_protocol(path)}", dict(target_options)


def redacted(url: str) -> str:
    """``url`` fit to print: a password in it (``sftp://user:secret@host/…``) becomes
    ``***``, in every layer of a chained URL."""
    return _PASSWORD.sub(r"\1***@", url)


_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
