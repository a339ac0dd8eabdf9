"""SFTP through fsspec's paramiko client (``fsspec.implementations.sftp.SFTPFileSystem``).

What paramiko's filesystem leaves to us:

- It does every call on ONE SFTP channel (``fs.ftp``), which is not safe to share: two
  calls at once hang or corrupt it. ``Channels`` replaces ``fs.ftp`` with a bounded pool of
  channels on the same SSH connection (SSH multiplexes them), one per call in flight, so
  fsspec's own methods become safe from many threads too. A dead connection (the server
  restarted) is reconnected on the next call, for this storage and every other one that
  fsspec's instance cache hands the same filesystem.
- It leaves Nagle's algorithm on, which stalls every small write: TCP_NODELAY.
- It accepts any host key (``AutoAddPolicy``): ``KnownHosts`` checks the server's key
  against ``~/.ssh/known_hosts`` and the ``known_hosts`` storage option, as OpenSSH does.
- Publishing: a temp file, then SFTP v3 ``rename``, which refuses an existing target (the
  protocol says so; OpenSSH's and asyncssh's servers do): a refusal means "already
  stored", so concurrent writers of the same content cannot overwrite each other.
- Its errors (``SSHException``, ``EOFError``, "Socket is closed") are named as "server
  unavailable" in ``transient``; a call on a connection that died becomes a
  ConnectionAbortedError naming the server.

paramiko is imported lazily: only a filesystem of this class brings it in.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import posixpath
import socket
import stat
import threading
from base64 import b64encode
from collections.abc import Callable, Generator, Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lakery_fsspec._backends.diagnostics import Diagnosis, Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.staged import BlockingFiles, Steps, in_folder

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge
    from lakery_fsspec._writers import Writer

__all__ = [
    "SFTP",
    "Channels",
    "SFTPBackend",
    "SFTPDiagnostics",
    "UnknownHostKeyError",
    "channels_for",
]

T = TypeVar("T")

MAX_CHANNELS = 8
"""SFTP channels per connection at most (OpenSSH's sshd allows 10 sessions by default)."""
_READ_REQUEST = 32768
"""paramiko's largest read request; bigger ranges are fetched pipelined (readv)."""
_READV_SPAN = 2**20
"""Bytes per pipelined readv call (32 requests in flight)."""
_HOST_KEY_OPTION = "known_hosts"
"""The storage option naming a known-hosts file to check host keys against."""


class UnknownHostKeyError(Exception):
    """The SFTP server's host key is in none of the known-hosts files: it may not be the
    server it claims to be. ``fix`` says how to trust it."""

    def __init__(self, message: str, fix: str) -> None:
        super().__init__(f"{message} Fix: {fix}")
        self.message = message
        self.fix = fix


class SFTPBackend(BlockingFiles):
    """SFTP via paramiko: pooled channels, create-only renames, checked host keys."""

    min_range_size = 4 * 2**20

    def __init__(self, protocol: str, bridge: Bridge) -> None:
        super().__init__(protocol, bridge)
        self.channels = channels_for(self.fs)

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self._run(_read, path, start, end)

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return _FileWriter(self.channels, path)

    def _on_connection(self, step: Callable[..., T], /, *args: Any) -> T:
        return self.channels.run(step, *args)


class SFTPDiagnostics(Diagnostics):
    """SFTP's words (paramiko): host keys, logins, the host and port."""

    endpoint_option = "host"
    credentials_hint = (
        "Give the user and password in the URL (sftp://user:password@host/path) or as "
        "storage options username=, password= (or key_filename= for a private key)."
    )

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        limits = {"timeout": timeout, "banner_timeout": timeout, "auth_timeout": timeout}
        return {**limits, **options}

    @classmethod
    def explain(cls, error: BaseException, chain: list[BaseException]) -> Diagnosis | None:
        import paramiko
        from paramiko.ssh_exception import NoValidConnectionsError

        for item in chain:
            if isinstance(item, UnknownHostKeyError):
                return Diagnosis("unknown-host-key", item.message, item.fix)
            if isinstance(item, paramiko.BadHostKeyException):
                return Diagnosis(
                    "bad-credentials",
                    f"The SFTP server's host key changed: {item}. It may be another server "
                    "posing as this one.",
                    "If the server's key was changed on purpose, replace its line in your "
                    "known_hosts file (ssh-keygen -R '[host]:port', then ssh-keyscan).",
                )
            if isinstance(item, paramiko.AuthenticationException):
                return Diagnosis(
                    "bad-credentials",
                    f"The SFTP server refused the login ({item}).",
                    "Check the user name and password (or key_filename) in the URL or the "
                    "storage options.",
                )
            if isinstance(item, PermissionError):
                return Diagnosis(
                    "permission-denied",
                    f"The SFTP server refused this user the operation (permission denied: "
                    f"{item.filename or item.strerror or item}).",
                    "Use an account that may write there (or read-only commands), or point "
                    "the URL at a folder this user owns.",
                )
            if isinstance(item, NoValidConnectionsError):
                return Diagnosis(
                    "unreachable",
                    f"Nothing accepts SSH connections there ({item}).",
                    "Check the host and port (sftp://user@host:port/path) and that the SSH "
                    "server is running.",
                )
        return None


class SFTP(ProtocolSpec):
    """SFTP through fsspec's paramiko filesystem, which connects when made."""

    names = ("sftp", "ssh")
    filesystem = "fsspec.implementations.sftp.SFTPFileSystem"
    extra = "sftp"
    backend = SFTPBackend
    diagnostics = SFTPDiagnostics
    connects_on_init = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        host = options.get("host")
        if not host:
            return None
        return f"sftp://{host}:{options.get('port', 22)}"

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        """Host keys checked against known-hosts files unless the user chose a policy
        (``host_key_policy="auto_add"`` is fsspec's old accept-anything behaviour)."""
        options = dict(options)
        known = options.pop(_HOST_KEY_OPTION, None)
        if options.get("host_key_policy") is None:
            files = [Path(os.fspath(known)).expanduser()] if known else []
            options["host_key_policy"] = known_hosts_policy(tuple(files))
        elif known:
            msg = f"Give either {_HOST_KEY_OPTION}= or host_key_policy=, not both."
            raise ValueError(msg)
        return options

    @staticmethod
    def transient(error: BaseException) -> bool:
        import paramiko
        from paramiko.ssh_exception import IncompatiblePeer, NoValidConnectionsError

        if isinstance(error, EOFError | NoValidConnectionsError):
            return True
        refusals = (
            paramiko.AuthenticationException,
            paramiko.BadHostKeyException,
            paramiko.ChannelException,
            IncompatiblePeer,
        )
        return isinstance(error, paramiko.SSHException) and not isinstance(error, refusals)


# --- the channel pool ---------------------------------------------------------------------


class Channels:
    """A bounded pool of SFTP channels on one filesystem's SSH connection.

    It stands in for ``fs.ftp`` (paramiko's single ``SFTPClient``): each call borrows a
    channel for its duration, and a file opened through it keeps its channel until closed.
    No channel ever serves two threads at once. When the connection is found dead, the
    next borrower reconnects (``fs._connect()``) and channels of the old connection are
    dropped as they come back.
    """

    def __init__(self, fs: Any, limit: int = MAX_CHANNELS) -> None:
        self._fs = fs
        self._limit = limit
        self._cond = threading.Condition()
        self._idle: list[Any] = []
        self._open = 0  # channels idle or borrowed
        self._transport: Any = None
        self._adopt(fs.ftp)

    @property
    def host(self) -> str:
        """``host:port`` of the server, for error messages."""
        return f"{self._fs.host}:{self._fs.ssh_kwargs.get('port', 22)}"

    def run(self, step: Callable[..., T], /, *args: Any) -> T:
        """``step(channel, *args)`` on a borrowed channel (blocking)."""
        with self.borrow() as channel:
            return step(channel, *args)

    @contextlib.contextmanager
    def borrow(self) -> Generator[Any]:
        """A channel for this thread alone until the block ends."""
        channel = self._take()
        try:
            yield channel
        except BaseException as error:
            if self._usable(channel):
                self._give(channel)
                raise
            self._drop(channel)
            if isinstance(error, Exception) and not isinstance(error, ConnectionError):
                msg = f"the SFTP connection to {self.host} was lost"
                raise ConnectionAbortedError(errno.ECONNABORTED, msg) from error
            raise
        self._give(channel)

    # fs.ftp stand-in: fsspec's methods call these.

    def open(self, path: str, mode: str = "r", bufsize: int = -1) -> Any:
        """A file on a channel of its own, given back when the file is closed."""
        channel = self._take()
        try:
            file = channel.open(path, mode, bufsize)
        except BaseException:
            self._give(channel) if self._usable(channel) else self._drop(channel)
            raise
        return _PooledFile(file, partial(self._release, channel))

    def listdir_iter(self, path: str = ".", read_aheads: int = 50) -> Iterator[Any]:
        """The entries of a folder, listed in full on one channel."""
        with self.borrow() as channel:
            return iter(channel.listdir_attr(path))

    def __getattr__(self, name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            with self.borrow() as channel:
                return getattr(channel, name)(*args, **kwargs)

        return call

    # internals

    def _adopt(self, channel: Any) -> None:
        """Take a new connection's first channel (fsspec opens one on connecting)."""
        transport = channel.get_channel().get_transport()
        with contextlib.suppress(OSError):  # Nagle delays every small SFTP request
            transport.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._transport = transport
        self._idle.append(channel)
        self._open += 1
        self._fs.ftp = self

    def _take(self) -> Any:
        with self._cond:
            while True:
                if self._transport is None or not self._transport.is_active():
                    self._reconnect()
                if self._idle:
                    channel = self._idle.pop()
                    if self._usable(channel):
                        return channel
                    self._open -= 1
                    channel.close()
                    continue
                if self._open < self._limit:
                    self._open += 1
                    transport: Any = self._transport
                    break
                self._cond.wait()
        try:
            return transport.open_sftp_client()
        except BaseException as error:
            import paramiko

            with self._cond:
                self._open -= 1
                if isinstance(error, paramiko.ChannelException) and self._open:
                    self._limit = self._open  # the server allows no more: wait for one
                self._cond.notify()
            if isinstance(error, paramiko.ChannelException) and self._open:
                return self._take()
            raise

    def _reconnect(self) -> None:
        """Connect anew (under the lock: other borrowers wait for it)."""
        old = self._transport
        self._transport = None
        for channel in self._idle:
            channel.close()
        self._open -= len(self._idle)
        self._idle.clear()
        if old is not None:
            with contextlib.suppress(Exception):
                self._fs.client.close()
        self._fs._connect()
        self._adopt(self._fs.ftp)

    def _usable(self, channel: Any) -> bool:
        transport = channel.get_channel().get_transport()
        return (
            transport is self._transport
            and transport.is_active()
            and not channel.get_channel().closed
        )

    def _give(self, channel: Any) -> None:
        with self._cond:
            self._idle.append(channel)
            self._cond.notify()

    def _drop(self, channel: Any) -> None:
        with contextlib.suppress(Exception):
            channel.close()
        with self._cond:
            self._open -= 1
            self._cond.notify()

    def _release(self, channel: Any) -> None:
        self._give(channel) if self._usable(channel) else self._drop(channel)


class _PooledFile:
    """An SFTP file whose channel goes back to the pool when it is closed."""

    def __init__(self, file: Any, release: Callable[[], None]) -> None:
        self._file = file
        self._release: Callable[[], None] | None = release

    def close(self) -> None:
        release, self._release = self._release, None
        if release is None:
            return
        try:
            self._file.close()
        finally:
            release()

    def __enter__(self) -> _PooledFile:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


_pools_lock: threading.Lock


def _new_lock() -> None:
    """A fork child gets a fresh lock (the parent's may be held by a thread it lacks)."""
    global _pools_lock
    _pools_lock = threading.Lock()


_new_lock()
os.register_at_fork(after_in_child=_new_lock)


def channels_for(fs: Any) -> Channels:
    """The channel pool of a paramiko SFTP filesystem, made on first use; it replaces
    ``fs.ftp``, so every storage that fsspec's instance cache hands ``fs`` shares it (a
    fork child gets new instances from fsspec, so new pools)."""
    with _pools_lock:
        pool = fs.ftp
        return pool if isinstance(pool, Channels) else Channels(fs)


# --- blocking steps, each on one borrowed channel -----------------------------------------


def _size(sftp: Any, path: str) -> int | None:
    try:
        return int(sftp.stat(path).st_size)
    except FileNotFoundError:
        return None


def _read(sftp: Any, path: str, start: int | None, end: int | None) -> bytes:
    with sftp.open(path, "rb") as file:
        size = int(file.stat().st_size)
        first = 0 if start is None else (start if start >= 0 else max(0, size + start))
        last = size if end is None else (end if end >= 0 else max(0, size + end))
        last = min(last, size)
        if last <= first:
            return b""
        if last - first <= _READ_REQUEST:
            file.seek(first)
            return file.read(last - first)
        # Pipelined, a span at a time: paramiko's readv costs time quadratic in the
        # requests it holds.
        parts: list[bytes] = []
        for offset in range(first, last, _READV_SPAN):
            parts.extend(file.readv([(offset, min(_READV_SPAN, last - offset))]))
        return b"".join(parts)


def _write(sftp: Any, path: str, data: bytes) -> None:
    with sftp.open(path, "wb") as file:
        file.set_pipelined(True)
        file.write(data)


def _rename_new(sftp: Any, source: str, destination: str) -> bool:
    """Rename unless ``destination`` exists (SFTP v3 rename refuses it in the same
    request); whether it moved. A refused ``source`` stays where it is."""
    rename = partial(sftp.rename, source, destination)
    try:
        rename()
    except OSError:
        if _size(sftp, destination) is not None:
            return False
        # Refused, then gone: moved away meanwhile (gc's quarantine). Once more.
        try:
            rename()
        except OSError:
            if _size(sftp, destination) is None:
                raise
            return False
    return True


def _makedirs(sftp: Any, folder: str) -> None:
    if folder in ("", "/", "."):
        return
    try:
        sftp.mkdir(folder)
    except FileNotFoundError:
        _makedirs(sftp, posixpath.dirname(folder))
        _mkdir(sftp, folder)
    except OSError:
        if not _is_folder(sftp, folder):
            raise


def _mkdir(sftp: Any, folder: str) -> None:
    try:
        sftp.mkdir(folder)
    except OSError:
        if not _is_folder(sftp, folder):  # another writer made it meanwhile
            raise


def _is_folder(sftp: Any, path: str) -> bool:
    try:
        return stat.S_ISDIR(sftp.stat(path).st_mode)
    except FileNotFoundError:
        return False


def _ls(sftp: Any, folder: str) -> list[tuple[str, float | None]]:
    """Files directly in ``folder`` with their modification times (server's clock)."""
    entries = sftp.listdir_attr(folder)
    base = folder.rstrip("/")
    return [
        (f"{base}/{entry.filename}", None if entry.st_mtime is None else float(entry.st_mtime))
        for entry in entries
        if not stat.S_ISDIR(entry.st_mode or 0)
    ]


def _remove(sftp: Any, path: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        sftp.remove(path)


SFTPBackend.steps = Steps(_size, _remove, _write, _rename_new, _makedirs, _ls)


class _FileWriter:
    """A stream written block by block to one SFTP file, each block on whichever channel
    is free: a channel is never held while the stream waits for its next chunk (writers
    holding every channel while their tasks wait for worker threads busy waiting for a
    channel would deadlock)."""

    def __init__(self, channels: Channels, path: str) -> None:
        self._channels = channels
        self._path = path
        self._written = 0
        channels.run(in_folder, SFTPBackend.steps, path, _write, path, b"")

    def write(self, data: bytes | memoryview, /) -> None:
        self._channels.run(_write_at, self._path, self._written, data)
        self._written += len(data)

    def commit(self) -> None:
        """Nothing to do: each block was closed (acknowledged) as it was written."""

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self._channels.run(_remove, self._path)


def _write_at(sftp: Any, path: str, offset: int, data: bytes | memoryview) -> None:
    with sftp.open(path, "r+b") as file:
        file.set_pipelined(True)
        file.seek(offset)
        file.write(data)


# --- host keys ----------------------------------------------------------------------------


def known_hosts_policy(files: tuple[Path, ...]) -> Any:
    """A paramiko host-key policy that accepts a server only with a key listed for it in
    ``files`` or the user's ``~/.ssh/known_hosts`` (and the system's)."""
    return _policy_class()(files)


_policy: type[Any] | None = None


def _policy_class() -> type[Any]:
    global _policy
    if _policy is not None:
        return _policy
    import paramiko

    class KnownHosts(paramiko.MissingHostKeyPolicy):
        """Checks the server's key against known-hosts files (paramiko's own check
        finds none: fsspec's client loads no known hosts)."""

        def __init__(self, files: tuple[Path, ...]) -> None:
            self.files = files

        def __repr__(self) -> str:  # fsspec's instance cache key
            return f"KnownHosts({[str(path) for path in self.files]!r})"

        def missing_host_key(self, client: Any, hostname: str, key: Any) -> None:
            keys = paramiko.HostKeys()
            searched = [*_system_files(), *self.files]
            for path in searched:
                if path.is_file():
                    keys.load(str(path))
            known = keys.lookup(hostname)
            if known is not None and key.get_name() in known:
                if known[key.get_name()] == key:
                    return
                raise paramiko.BadHostKeyException(hostname, key, known[key.get_name()])
            if known:
                raise paramiko.BadHostKeyException(hostname, key, next(iter(known.values())))
            raise UnknownHostKeyError(*_unknown_key_message(hostname, key, searched))

    _policy = KnownHosts
    return KnownHosts


def _system_files() -> list[Path]:
    return [Path("/etc/ssh/ssh_known_hosts"), Path("~/.ssh/known_hosts").expanduser()]


def _unknown_key_message(hostname: str, key: Any, searched: list[Path]) -> tuple[str, str]:
    fingerprint = b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    host, _, port = hostname.strip("[").partition("]:")
    scan = f"ssh-keyscan -p {port} {host}" if port else f"ssh-keyscan {host}"
    files = ", ".join(str(path) for path in searched)
    message = (
        f"The SFTP server {hostname} presented a host key ({key.get_name()} "
        f"SHA256:{fingerprint}) that is in none of the known-hosts files ({files}), so it "
        "could be another server posing as it."
    )
    fix = (
        "Check the fingerprint with the server's administrator, then add its key: "
        f"`{scan} >> ~/.ssh/known_hosts`, or give the storage option known_hosts=PATH "
        "naming a file that lists it (host_key_policy='auto_add' accepts any key: not "
        "recommended)."
    )
    return message, fix
