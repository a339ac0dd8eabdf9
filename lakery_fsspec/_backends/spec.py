"""What a protocol is before any filesystem exists, and how its client is driven."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from fsspec.spec import AbstractFileSystem

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.diagnostics import Diagnostics
from lakery_fsspec._bridge import Bridge, Reconnect
from lakery_fsspec._loops import shared_loop_instances

__all__ = ["ProtocolSpec"]


class ProtocolSpec:
    """One protocol: its names, the fsspec class it drives, the extra that installs it,
    how its URLs and options are read, how its client is driven, and its ``backend`` (the
    data path) and ``diagnostics`` (the command line's words).

    The defaults hold for any fsspec filesystem. Subclass it, set ``names`` (or
    ``filesystem`` alone, for an implementation of protocols that others name) and
    ``backend``, and register it with :func:`lakery_fsspec.register_protocol`.
    """

    names: ClassVar[tuple[str, ...]] = ()
    """The protocol names it serves; the first is the one pointers record."""
    filesystem: ClassVar[str | None] = None
    """The fsspec class it drives (``"s3fs.core.S3FileSystem"``, matched with its
    subclasses), or None if any implementation of its names will do."""
    extra: ClassVar[str | None] = None
    """The lakery-fsspec extra that installs the filesystem (``pip install 'lakery-fsspec[x]'``)."""
    backend: ClassVar[type[Backend]] = Backend
    """How the storage does each operation on this filesystem."""
    diagnostics: ClassVar[type[Diagnostics]] = Diagnostics
    """What the command line says about this protocol's errors."""
    connects_on_init: ClassVar[bool] = False
    """Whether making the filesystem connects to its server (SFTP, FTP): storages then
    make it in a thread of its own, never on the event loop."""
    loop_native: ClassVar[bool] = False
    """Whether async calls run on the caller's loop, through a copy of the filesystem
    per loop opened with ``connect`` and closed with ``disconnect`` (else: an async
    filesystem's calls run on fsspec's IO loop, a blocking one's in worker threads)."""
    reconnect: ClassVar[Reconnect | None] = None
    """How to replace a filesystem whose connection closed for good, if it never
    reconnects by itself."""

    @classmethod
    def serves(cls, filesystem: type[Any] | str) -> bool:
        """Whether this spec drives filesystems of class ``filesystem`` (a class, or the
        dotted path fsspec would import it from where its package is missing)."""
        wanted = cls.filesystem
        if wanted is None:
            return True
        if isinstance(filesystem, str):
            # fsspec names classes by their package's re-export ("s3fs.S3FileSystem").
            package, _, name = filesystem.partition(".")
            return (
                wanted.split(".")[0] == package
                and wanted.rsplit(".", 1)[-1] == name.rsplit(".", 1)[-1]
            )
        return any(
            f"{base.__module__}.{base.__qualname__}" == wanted for base in filesystem.__mro__
        )

    @classmethod
    def split_url(
        cls, fs_class: type[Any], url: str, options: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """The root a URL (a chain's innermost) names, as pointers record it, and the storage
        options the URL itself carries (host, port, user, password:
        ``sftp://user:pw@host:port/path``); ``options`` are those given explicitly, which
        win over the URL's."""
        return str(fs_class._strip_protocol(url)).rstrip("/"), fs_class._get_kwargs_from_urls(url)

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """The user's storage options plus what the backend needs of its filesystem."""
        return options

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        """The server a storage was explicitly pointed at (options or environment), if any."""
        return None

    @classmethod
    def prepare_environment(cls, options: Mapping[str, Any]) -> None:
        """Set what the client reads from the environment at import (emulator switches)."""

    @staticmethod
    def transient(error: BaseException) -> bool:
        """Whether ``error`` (one link of a failed call's exception chain) means the
        server is unavailable, for a client whose errors the generic rules of
        ``_errors.unavailable`` (timeouts, connection errors, HTTP 5xx) do not cover."""
        return False

    @classmethod
    def copy_options(cls, fs: Any) -> dict[str, Any]:
        """Options for ``fs``'s per-loop copies on top of its own, made once per ``fs``:
        what the copies share, so that a new event loop does not pay for a new client."""
        return {}

    @staticmethod
    async def connect(fs: Any) -> None:
        """Open a per-loop copy's client session before its first call."""

    @staticmethod
    async def disconnect(fs: Any) -> None:
        """Close a per-loop copy's client session."""

    @classmethod
    def open(cls, protocol: str, fs: AbstractFileSystem, timeout: float | None) -> Backend:
        """The backend for ``fs``, whose canonical protocol is ``protocol``."""
        instances = None
        if cls.loop_native and fs.async_impl:
            instances = shared_loop_instances(fs, cls.connect, cls.disconnect, cls.copy_options)
        bridge = Bridge(
            fs,
            timeout=timeout,
            loop_instances=instances,
            transient=cls.transient,
            reconnect=cls.reconnect,
        )
        return cls.backend(protocol, bridge)
