"""Parsing storage URLs: which filesystem, which root, and the filesystem itself (lazily)."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import fsspec
from fsspec.core import split_protocol, url_to_fs
from fsspec.spec import AbstractFileSystem

from lakery_fsspec.backends import backend_class

__all__ = ["Location", "canonical_protocol", "filesystem_class", "open_filesystem", "redacted"]


def filesystem_class(protocol: str) -> type[AbstractFileSystem]:
    """Import the fsspec class for ``protocol``; ValueError says what to install if missing."""
    try:
        return fsspec.get_filesystem_class(protocol)
    except ImportError as error:
        extra = backend_class(protocol).extra
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
    the first name of its backend, else the first name of its filesystem class."""
    names = filesystem_class(protocol).protocol
    first = names if isinstance(names, str) else names[0]
    return (backend_class(first).protocols or (first,))[0]


class Location:
    """A storage URL resolved to its target protocol and root, with its filesystem on demand.

    For a chained URL (``simplecache::s3://bucket/lake``) the target is the innermost
    filesystem; reads go through the whole chain, writes straight to the target.
    """

    def __init__(self, url: str | os.PathLike[str], storage_options: Mapping[str, Any]) -> None:
        url = os.fspath(url)
        if not isinstance(url, str) or not url.strip():  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = f"The storage URL must be a non-empty string or path, not {url!r}."
            raise ValueError(msg)
        self.url = url
        self.layers = [layer for layer in url.split("::") if layer]
        inner = self.layers[-1]
        for layer in self.layers[:-1]:
            filesystem_class(split_protocol(layer)[0] or layer)
        scheme = split_protocol(inner)[0] or "file"
        self.protocol = canonical_protocol(scheme)
        fs_class = filesystem_class(scheme)
        if self.chained:
            self.root, from_url = str(fs_class._strip_protocol(inner)).rstrip("/"), {}
        else:
            # What the URL itself says (host, port, user, password: sftp://user:pw@host/path)
            # counts, under the options given explicitly.
            backend = backend_class(self.protocol, fs_class)
            self.root, from_url = backend.split_url(fs_class, inner, storage_options)
        if not self.root.strip("/"):
            msg = (
                f"The storage URL {url!r} names no root folder or bucket; "
                f"write it as e.g. {scheme}://my-bucket/prefix or a local directory path."
            )
            raise ValueError(msg)
        self._scheme = scheme
        self._options = {**from_url, **storage_options}

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
            target = open_filesystem(self._scheme, self._options)
            return target, target
        # Options keyed by a layer's protocol go to that layer, the rest to the target.
        layer_names = {split_protocol(layer)[0] or layer for layer in self.layers[:-1]}
        options = {k: v for k, v in self._options.items() if k in layer_names}
        target_options = {k: v for k, v in self._options.items() if k not in layer_names}
        options[self._scheme] = _backend_options(self._scheme, target_options)
        read_fs, _ = url_to_fs(self.url, **options)
        return read_fs, _innermost(read_fs)

    def __repr__(self) -> str:
        return f"Location({self.protocol!r}, {self.root!r})"


def open_filesystem(protocol: str, options: Mapping[str, Any]) -> AbstractFileSystem:
    """The fsspec filesystem for ``protocol`` with the user's options plus what its
    backend needs (raw, never decompressed GCS reads, say)."""
    return fsspec.filesystem(protocol, **_backend_options(protocol, options))


def _backend_options(protocol: str, options: Mapping[str, Any]) -> dict[str, Any]:
    backend = backend_class(canonical_protocol(protocol), filesystem_class(protocol))
    return backend.filesystem_options(dict(options))


def _innermost(fs: AbstractFileSystem) -> AbstractFileSystem:
    while isinstance(inner := getattr(fs, "fs", None), AbstractFileSystem):
        fs = inner
    return fs


def redacted(url: str) -> str:
    """``url`` fit to print: a password in it (``sftp://user:secret@host/…``) becomes
    ``***``, in every layer of a chained URL."""
    return _PASSWORD.sub(r"\1***@", url)


_PASSWORD = re.compile(r"(://[^/@:]*:)[^/@]*@")
