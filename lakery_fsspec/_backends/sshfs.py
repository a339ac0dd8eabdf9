"""SFTP through sshfs (asyncssh): renames that refuse to overwrite, exact ranges, reconnects.

sshfs's own ``_cp_file`` runs a shell ``cp`` (refused on SFTP-only accounts) and its
``_cat_file`` ignores ``start``/``end``; this backend talks SFTP to sshfs's channels
directly for writes, moves and reads, and uses sshfs for the rest.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import stat
from collections.abc import AsyncIterable, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from lakery_fsspec._backends.base import blocks, cleanup
from lakery_fsspec._backends.diagnostics import Diagnosis, Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.staged import StagedFiles
from lakery_fsspec._bridge import Bridge, Reconnect
from lakery_fsspec._errors import StorageUnavailableError

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["SSHFS", "SSHFSBackend", "SSHFSDiagnostics"]

T = TypeVar("T")

_DEFAULT_PORT = 22
# asyncssh's exceptions that mean the connection or the server went away (matched by
# name: asyncssh is imported only where sshfs is used).
_GONE = frozenset(
    {
        "ConnectionLost",  # the TCP connection closed under us
        "ServiceNotAvailable",
        "ChannelOpenError",  # no new SFTP channel: the connection is closed or full
        "SFTPConnectionLost",
        "SFTPNoConnection",
    }
)


class SSHFSBackend(StagedFiles):
    """SFTP through sshfs (``sshfs.spec.SSHFileSystem``, asyncssh), on fsspec's IO loop.

    - Writes go to a temp file and are published with a plain SFTP ``rename``, which
      (SFTP v3) refuses an existing target in the same request: a refusal is "already
      stored", so concurrent writers of one content end with one intact object. No shell
      command is ever run (SFTP-only accounts work).
    - Reads are exact byte ranges of an SFTP file handle.
    - Host keys are checked as asyncssh does by default (``~/.ssh/known_hosts`` and the
      SSH config), unless the storage options give ``known_hosts`` (a file, or None to
      accept any key).
    - A connection that closed (server restart) is replaced on the next call, in fsspec's
      instance cache too, so the same storage and new ones work again.
    """

    needs_dirs = True
    min_block_size = 2**20

    def __init__(self, protocol: str, bridge: Bridge) -> None:
        super().__init__(protocol, bridge)
        self._orphans: set[str] = set()
        """Temps a failed clean-up could not remove (the server was down), removed once
        the server answers again."""

    # --- reads ----------------------------------------------------------------------------

    async def size(self, path: str) -> int | None:
        try:
            attrs = await self._sftp(lambda sftp: sftp.stat(path))
        except FileNotFoundError:
            return None
        return int(attrs.size)

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        async def read(sftp: Any) -> bytes:
            async with sftp.open(path, "rb", block_size=-1) as file:
                first, last = start or 0, end
                if first < 0 or (last is not None and last < 0):
                    size = int((await file.stat()).size)
                    first = max(0, size + first) if first < 0 else first
                    last = max(0, size + last) if last is not None and last < 0 else last
                if last is None:
                    return await file.read(-1, first)
                return await file.read(max(0, last - first), first) if last > first else b""

        return await self._sftp(read)

    # --- writes ---------------------------------------------------------------------------

    async def upload(
        self, path: str, stream: AsyncIterable[bytes], digest: Digest, chunk_size: int
    ) -> None:
        """Write a stream to an SFTP file handle block by block (one block in memory)."""
        await self._sweep()
        block_size = self.block_size(chunk_size)
        file = await self._making_folder(path, lambda: self._sftp(lambda sftp: _open(sftp, path)))
        try:
            offset = 0
            async with contextlib.aclosing(blocks(stream, block_size)) as gathered:
                async for block in gathered:
                    data = b"".join(block)
                    await self._sftp(_writing(file, data, offset))
                    offset += len(data)
        finally:
            # On failure the caller removes the temp file; close it first either way.
            await cleanup(self._sftp(lambda _: file.close()), f"close sftp://{path}")

    async def _write_file(self, path: str, data: bytes, digest: Digest | None = None) -> None:
        await self._sftp(lambda sftp: _write_file(sftp, path, data))

    async def _rename_new(self, source: str, destination: str) -> bool:
        await self._sweep()  # every blob and stream is published here (not probes)
        return await self._sftp(lambda sftp: _rename_new(sftp, source, destination))

    async def _make_folders(self, folder: str) -> None:
        await self._sftp(lambda sftp: _makedirs(sftp, folder))

    async def _files_with_mtimes(self, folder: str) -> list[tuple[str, float | None]]:
        entries = await self._sftp(lambda sftp: sftp.readdir(folder))
        return [
            (posixpath.join(folder.rstrip("/"), entry.filename), entry.attrs.mtime)
            for entry in entries
            if not stat.S_ISDIR(entry.attrs.permissions or 0)  # also . and ..
        ]

    async def remove(self, path: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            await self._sftp(lambda sftp: sftp.remove(path))

    async def discard(self, temp: str) -> None:
        async def remove() -> None:
            try:
                await self.remove(temp)
            except StorageUnavailableError:
                self._orphans.add(temp)  # removed by the next write, once the server is back
                raise

        await cleanup(remove(), f"remove the temp object sftp://{temp}")

    async def _sweep(self) -> None:
        """Remove temps left by clean-ups that failed while the server was down."""
        while self._orphans:
            temp = self._orphans.pop()
            try:
                await self.remove(temp)
            except BaseException:
                self._orphans.add(temp)
                raise

    # --- the SFTP channel -----------------------------------------------------------------

    async def _sftp(self, work: Callable[[Any], Awaitable[T]]) -> T:
        """Await ``work(sftp)`` with one of sshfs's SFTP channels, on its loop, with
        SFTP errors as the builtin OSErrors (missing, denied, exists)."""

        async def on_channel(fs: Any) -> T:
            async with fs._pool.get() as sftp:
                return await _mapped(work(sftp))

        return await self.io.run(on_channel)


class SSHFSDiagnostics(Diagnostics):
    """SFTP's words (asyncssh): host keys, logins, the host and port."""

    endpoint_option = "host"
    credentials_hint = (
        "Give the user in the URL (sftp://user@host:port/path) and the password "
        "(-o password=...) or a key (-o client_keys='[\"~/.ssh/id_ed25519\"]')."
    )
    known_hosts_fix: ClassVar[str] = (
        "Add the server's key to ~/.ssh/known_hosts (ssh-keyscan -p PORT HOST >> "
        "~/.ssh/known_hosts, after checking its fingerprint), or give a known_hosts file "
        "(-o known_hosts=/path/to/known_hosts); -o known_hosts=null accepts any key (unsafe)."
    )

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        # sshfs bounds its connection set-up with ``timeout``; asyncssh's own login
        # timeout is two minutes.
        return {"timeout": timeout, **options}

    @classmethod
    def explain(cls, error: BaseException, chain: list[BaseException]) -> Diagnosis | None:
        names = {kind.__name__ for item in chain for kind in type(item).__mro__}
        if "HostKeyNotVerifiable" in names:
            return Diagnosis(
                "bad-credentials",
                "The SFTP server's host key is not known, so the connection was refused "
                "(it could be another machine posing as the server).",
                cls.known_hosts_fix,
            )
        if "PermissionDenied" in names and "SFTPPermissionDenied" not in names:
            return Diagnosis(
                "bad-credentials",
                "The SFTP server refused to log in with this user and password or key.",
                cls.credentials_hint,
            )
        if "SFTPPermissionDenied" in names or any(isinstance(e, PermissionError) for e in chain):
            return Diagnosis(
                "permission-denied",
                "The SFTP server denied this user access to the storage folder "
                "(the account may be read-only there).",
                "Use an account that may write under the storage root, or ask the server's "
                "administrator to grant write access to that folder.",
            )
        if any(isinstance(e, ConnectionRefusedError) for e in chain):
            return Diagnosis(
                "unreachable",
                "Cannot connect to the SFTP server: connection refused (nothing is "
                "listening at that host and port).",
                "Check the host and port in the URL (sftp://user@host:port/path) and that "
                "the SSH server is running.",
            )
        if "SFTPNoSuchFile" in names or any(isinstance(e, FileNotFoundError) for e in chain):
            return Diagnosis(
                "no-bucket",
                "A folder on the path to the storage root does not exist on the SFTP server "
                "and could not be made.",
                "Check the path in the URL, or create the missing folder on the server first.",
            )
        return None


def _closed(fs: Any) -> bool:
    client = getattr(fs, "_client", None)
    return client is not None and bool(client.is_closed())


def _fresh(dead: Any) -> Any:
    """A connected copy of ``dead``, also the one fsspec's cache hands out from now on."""
    cls = type(dead)
    token = getattr(dead, "_fs_token", None)
    cached = cls._cache.get(token)
    if cached is not None and cached is not dead and not _closed(cached):
        return cached  # another storage reconnected first
    cls._cache.pop(token, None)
    return cls(*dead.storage_args, **dead.storage_options)


async def _mapped(step: Awaitable[T]) -> T:
    """``step`` with asyncssh's SFTP errors as FileNotFoundError/PermissionError."""
    import asyncssh

    try:
        return await step
    except asyncssh.SFTPNoSuchFile as error:
        raise FileNotFoundError(errno.ENOENT, error.reason) from error
    except (asyncssh.SFTPPermissionDenied, asyncssh.PermissionDenied) as error:
        raise PermissionError(errno.EACCES, error.reason) from error


async def _open(sftp: Any, path: str) -> Any:
    return await sftp.open(path, "wb", block_size=-1)


async def _write_file(sftp: Any, path: str, data: bytes) -> None:
    file = await _open(sftp, path)
    try:
        if data:
            await file.write(data, 0)
    finally:
        await file.close()


def _writing(file: Any, block: bytes, offset: int) -> Callable[[Any], Awaitable[int]]:
    return lambda _: file.write(block, offset)


async def _rename_new(sftp: Any, source: str, destination: str) -> bool:
    """Rename unless ``destination`` exists (SFTP v3 ``rename`` refuses it in the same
    request); whether it moved. A refused source stays where it is."""
    import asyncssh

    try:
        await sftp.rename(source, destination)
    except asyncssh.SFTPError:
        if await sftp.exists(destination):
            return False
        raise
    return True


async def _makedirs(sftp: Any, folder: str) -> None:
    """Make ``folder`` and any missing parents: one request when only the last is missing
    (asyncssh's own ``makedirs`` asks about every level)."""
    import asyncssh

    try:
        await sftp.mkdir(folder)
    except asyncssh.SFTPNoSuchFile:
        parent = posixpath.dirname(folder)
        if parent == folder:
            raise
        await _makedirs(sftp, parent)
        await _mkdir_quietly(sftp, folder)
    except asyncssh.SFTPError:
        if not await sftp.isdir(folder):  # "exists" is fine, anything else is not
            raise


async def _mkdir_quietly(sftp: Any, folder: str) -> None:
    import asyncssh

    try:
        await sftp.mkdir(folder)
    except asyncssh.SFTPError:
        if not await sftp.isdir(folder):  # another writer made it meanwhile
            raise


class SSHFS(ProtocolSpec):
    """SFTP through sshfs (asyncssh), which connects when made."""

    names = ("sftp", "ssh")
    filesystem = "sshfs.spec.SSHFileSystem"
    extra = "sshfs"
    backend = SSHFSBackend
    diagnostics = SSHFSDiagnostics
    connects_on_init = True
    reconnect = Reconnect(closed=_closed, fresh=_fresh)
    """sshfs connects when made and never again; fsspec's instance cache would hand the
    dead instance to every storage with the same options, so the replacement goes into
    the cache too (``_fresh``)."""

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        host = options.get("host")
        if not isinstance(host, str) or not host:
            return None
        return f"sftp://{host}:{options.get('port') or _DEFAULT_PORT}"

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Check host keys as asyncssh does (sshfs would pass ``known_hosts=None``)."""
        if not options.get("host"):
            msg = (
                "An SFTP storage needs the server's host: write the URL as "
                "sftp://user@host:port/path, or give host (and port, username) in the "
                "storage options (a pointer names no server)."
            )
            raise ValueError(msg)
        return {"known_hosts": (), **options}

    @staticmethod
    def transient(error: BaseException) -> bool:
        name = type(error).__name__
        if name == "DisconnectError" or name in _GONE:
            return True
        # asyncssh ends calls in flight on a closed connection with this OSError.
        return isinstance(error, BrokenPipeError)
