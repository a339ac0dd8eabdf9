"""FTP, through fsspec's ``FTPFileSystem`` (ftplib).

ftplib has one control connection per client and it carries one command (and one
transfer) at a time: two calls at once on fsspec's filesystem break it for good. This
backend therefore never uses the filesystem's own connection: each operation checks a
connection out of a small pool (made like the filesystem's, from its options), runs on
it in a worker thread, and gives it back. A connection that failed in any other way than
a clean refusal (a 5xx reply) is closed, and an idle one the server has hung up on (a
restart, an idle timeout) is noticed without a round trip and replaced; so a storage
works again once its server is back.
"""

from __future__ import annotations

import contextlib
import errno
import ftplib
import posixpath
import select
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Generator, Mapping
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

from lakery_fsspec._backends.diagnostics import Diagnosis, Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.staged import BlockingFiles, Steps, in_folder

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge
    from lakery_fsspec._writers import Writer

__all__ = ["FTP", "FTPBackend", "FTPDiagnostics"]

T = TypeVar("T")

_MAX_IDLE = 16
"""Idle connections a pool keeps; more are opened while more calls run at once."""
_RECEIVE = 256 * 2**10
"""Bytes asked of a data connection per receive (larger ones cost more than they save)."""
_CLEAN = (ftplib.error_perm, FileNotFoundError, PermissionError)
"""Failures after which the control connection is still in step (a complete 5xx reply)."""


class FTPBackend(BlockingFiles):
    """FTP: each operation on a pooled connection of its own, in one worker-thread hop.

    A blob is stored (STOR) at a temp path and renamed into place (RNFR/RNTO, a
    server-side move), so it is complete at its final path or absent. FTP cannot refuse
    an existing name in the rename (pyftpdlib, like most servers, replaces it), so the
    move checks first (SIZE): two writers of the same content can both rename, the
    second over the first, with the same bytes. A stream is one STOR of its blocks on a
    data connection of its own. Reads are RETR, ranged with REST; a range that ends
    before the object does closes its data connection early.
    """

    min_block_size = 2**20  # one worker-thread hop per block
    min_range_size = 4 * 2**20  # each range is its own transfer

    def __init__(self, protocol: str, bridge: Bridge) -> None:
        super().__init__(protocol, bridge)
        self._pool = _Pool(self.fs)

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self._run(_retrieve, path, start or 0, end)

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        return _StoreWriter(self._pool, path)

    def _on_connection(self, step: Callable[..., T], /, *args: Any) -> T:
        return self._pool.run(step, *args)


class FTPDiagnostics(Diagnostics):
    """FTP's words: reply codes, the host and port, the login."""

    credentials_hint = (
        "Give the user and password in the URL (ftp://USER:PASSWORD@HOST:PORT/folder) or "
        "as storage options (-o username=USER -o password=PASSWORD)."
    )

    @classmethod
    def explain(cls, error: BaseException, chain: list[BaseException]) -> Diagnosis | None:
        reply = next((item for item in chain if isinstance(item, ftplib.Error)), None)
        code = str(reply)[:3] if reply is not None else ""
        if code in ("530", "332"):
            return Diagnosis(
                "bad-credentials",
                f"The FTP server refused the login ({_first_line(reply)}): the user name or "
                "password is wrong, or the account is disabled.",
                cls.credentials_hint,
            )
        if any(isinstance(item, ConnectionRefusedError) for item in chain):
            return Diagnosis(
                "unreachable",
                "Cannot connect to the FTP server: connection refused (nothing is listening "
                "at that host and port).",
                "Check the host and port in the URL (ftp://HOST:PORT/folder; FTP's default "
                "port is 21) and that the FTP server is running.",
            )
        if isinstance(error, _MissingFolder) or any(isinstance(i, _MissingFolder) for i in chain):
            return Diagnosis(
                "no-bucket",
                f"{_first_line(error)}.",
                "Create the folder on the server, correct the path in the URL, or give the "
                "FTP user permission to make folders there.",
            )
        if isinstance(error, PermissionError) and reply is not None:
            return Diagnosis(
                "permission-denied",
                f"The FTP server refused to let this user write ({_first_line(reply)}).",
                "Give the FTP user permission to store, rename and delete files and make "
                "folders under the storage root, or use an account that has it.",
            )
        return None

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        return {**options, "timeout": min(float(options.get("timeout", 30)), timeout)}


class FTP(ProtocolSpec):
    """FTP through fsspec's ftplib filesystem, which connects when made."""

    names = ("ftp",)
    filesystem = "fsspec.implementations.ftp.FTPFileSystem"
    backend = FTPBackend
    diagnostics = FTPDiagnostics
    connects_on_init = True

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        host = options.get("host")
        return f"ftp://{host}:{options.get('port', 21)}" if host else None

    @staticmethod
    def transient(error: BaseException) -> bool:
        # EOFError: ftplib's word for a control connection the server closed;
        # error_temp: 4xx replies (421 closing, 425/426 data connection failed, 450/451).
        return isinstance(error, EOFError | ftplib.error_temp)

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        if not options.get("host"):  # before fsspec's own TypeError (it connects at once)
            msg = (
                "An ftp:// storage needs the server's host: write the URL as "
                "ftp://[USER[:PASSWORD]@]HOST[:PORT]/folder, or give the option host=HOST."
            )
            raise ValueError(msg)
        return options


class _Pool:
    """Control connections to one server, each used by one operation at a time.

    Connections are opened like the filesystem's own (a copy of it per connection, so
    TLS and encoding options apply); the filesystem's own connection is never used (a
    caching layer in front of it may use it). Up to ``_MAX_IDLE`` are kept idle, and
    closed when the pool is collected. A pool belongs to one backend, which is made anew
    in a forked child.
    """

    def __init__(self, fs: Any) -> None:
        self._fs = fs
        self._idle: list[_Connection] = []
        self._lock = threading.Lock()
        # Closed explicitly: left to the garbage collector, a socket in a reference
        # cycle may be finalized before the ftplib object that would close it (and warn).
        weakref.finalize(self, _close_all, self._idle)

    def run(self, operation: Callable[..., T], /, *args: Any) -> T:
        with self.connection() as ftp:
            return operation(ftp, *args)

    @contextlib.contextmanager
    def connection(self) -> Generator[ftplib.FTP]:
        """A connection of this caller's own; given back unless it failed uncleanly."""
        connection = self.take()
        try:
            yield connection.ftp
        except _CLEAN:
            self.give(connection)
            raise
        except BaseException:
            connection.close()
            raise
        self.give(connection)

    def take(self) -> _Connection:
        """An idle connection the server has not hung up on, or a new one (blocking)."""
        while True:
            with self._lock:
                connection = self._idle.pop() if self._idle else None
            if connection is None:
                connection = _Connection(_copy(self._fs))
            if connection.idle_and_alive():
                try:
                    connection.ready()
                except BaseException:
                    connection.close()
                    raise
                return connection
            connection.close()

    def give(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < _MAX_IDLE:
                self._idle.append(connection)
                return
        connection.close()


def _copy(fs: Any) -> Any:
    """A copy of an FTP filesystem: its own control connection, logged in."""
    try:
        return type(fs)(*fs.storage_args, **fs.storage_options)
    except ftplib.error_perm as error:  # 530: user or password refused
        msg = f"FTP login refused for user {fs.cred[0]!r} ({_first_line(error)})"
        raise PermissionError(msg) from error


def _close_all(connections: list[_Connection]) -> None:
    for connection in connections:
        connection.close()
    connections.clear()


class _Connection:
    """The logged-in control connection of one FTP filesystem (kept alive with it)."""

    def __init__(self, fs: Any) -> None:
        self._fs = fs
        self.ftp: ftplib.FTP = fs.ftp
        self._binary = False

    def ready(self) -> None:
        """Switch to binary transfers once, without Nagle's delays (blocking)."""
        if not self._binary:
            if self.ftp.sock is not None:
                self.ftp.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.ftp.voidcmd("TYPE I")
            self._binary = True

    def idle_and_alive(self) -> bool:
        """Whether the server has said nothing since the last reply: on an idle control
        connection, anything readable is the end of it (a hang-up, a 421 goodbye)."""
        sock = self.ftp.sock
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.ftp.close()


class _MissingFolder(FileNotFoundError):
    """A folder to write in does not exist, and making it was refused."""


# --- the operations, each on one connection (blocking) -----------------------------------


def _size(ftp: ftplib.FTP, path: str) -> int | None:
    try:
        return ftp.size(path)
    except ftplib.error_perm:  # 550: no such file (or a folder)
        return None


def _retrieve(ftp: ftplib.FTP, path: str, start: int, end: int | None) -> bytes:
    """The bytes of ``path`` from ``start`` to ``end`` (or its end), exactly."""
    wanted = None if end is None else max(0, end - start)
    if wanted == 0:
        return b""
    try:
        data = ftp.transfercmd(f"RETR {path}", rest=start or None)
    except ftplib.error_perm as error:
        raise FileNotFoundError(path) from error
    parts: list[bytes] = []
    missing = wanted
    with data:
        while missing is None or missing > 0:
            chunk = data.recv(_RECEIVE if missing is None else min(_RECEIVE, missing))
            if not chunk:
                break
            parts.append(chunk)
            if missing is not None:
                missing -= len(chunk)
        complete = missing is None or missing > 0
        if complete:
            _unwrap(data)
    if complete:
        ftp.voidresp()  # 226, or a 4xx if the transfer broke off
    else:
        _after_early_close(ftp)
    return b"".join(parts)


def _after_early_close(ftp: ftplib.FTP) -> None:
    """Read the one reply a transfer closed early by us ends with: 226 if the server had
    sent everything already, else 426/450/451 (aborted)."""
    reply = ftp.getmultiline()
    if reply[:1] != "2" and reply[:3] not in ("426", "450", "451"):
        raise ftplib.error_reply(reply)


def _start_store(ftp: ftplib.FTP, path: str) -> socket.socket:
    """The data connection of a STOR to ``path``; FileNotFoundError if its folder is
    missing."""
    return _refusal_named(ftp, path, partial(ftp.transfercmd, f"STOR {path}"))


def _store(ftp: ftplib.FTP, path: str, data: bytes) -> None:
    """STOR ``data`` at ``path``; FileNotFoundError if its folder is missing."""
    conn = _start_store(ftp, path)
    with conn:
        conn.sendall(data)
        _unwrap(conn)
    ftp.voidresp()


def _rename_new(ftp: ftplib.FTP, source: str, destination: str) -> bool:
    """Rename ``source`` to ``destination`` unless a file is there; whether it moved. A
    refused ``source`` stays where it is.

    FTP renames replace, so the destination is checked first (SIZE): not race-free, two
    writers of the same content can both rename, the second over the first (same bytes).
    """
    if _size(ftp, destination) is not None:
        return False
    _refusal_named(ftp, destination, partial(ftp.rename, source, destination))
    return True


def _files_modified(ftp: ftplib.FTP, folder: str) -> list[tuple[str, float | None]]:
    """Full paths of the files directly in ``folder`` with their MLSD ``modify`` times
    (the server's clock)."""
    folder = folder.rstrip("/")
    return [
        (f"{folder}/{name}", _timestamp(facts.get("modify", "")))
        for name, facts in _listing(ftp, folder, ["type", "modify"])
        if facts.get("type") == "file"
    ]


def _listing(ftp: ftplib.FTP, folder: str, facts: list[str]) -> list[tuple[str, dict[str, str]]]:
    """MLSD of ``folder``; FileNotFoundError if there is none. ftplib lists in ASCII
    mode: the connection is switched back to binary, or every later transfer on it would
    translate line ends (and change the bytes)."""
    try:
        return list(ftp.mlsd(folder, facts=facts))
    except ftplib.error_perm as error:
        raise FileNotFoundError(folder) from error
    finally:
        ftp.voidcmd("TYPE I")


def _timestamp(modify: str) -> float | None:
    """Seconds since the epoch of an MLSD ``modify`` fact (UTC ``YYYYMMDDHHMMSS[.fff]``)."""
    try:
        whole, _, fraction = modify.partition(".")
        stamp = datetime.strptime(whole, "%Y%m%d%H%M%S").replace(tzinfo=UTC).timestamp()
        return stamp + (float(f"0.{fraction}") if fraction.isdigit() else 0.0)
    except ValueError:
        return None


def _delete(ftp: ftplib.FTP, path: str) -> None:
    """Delete ``path`` if it exists; PermissionError if it stays."""
    try:
        ftp.delete(path)
    except ftplib.error_perm as error:
        if _size(ftp, path) is not None:
            msg = f"The FTP server refused to delete {path} ({_first_line(error)})"
            raise PermissionError(msg) from error


def _refusal_named(ftp: ftplib.FTP, path: str, step: Callable[[], T]) -> T:
    """``step()`` (a write to ``path``), its refusal named: FileNotFoundError if the
    folder of ``path`` is missing; if it is there (made meanwhile by another writer,
    perhaps), the step is tried once more, and PermissionError if refused again."""
    try:
        return step()
    except ftplib.error_perm as error:
        folder = posixpath.dirname(path)
        if folder not in ("", "/") and not _is_folder(ftp, folder):
            raise FileNotFoundError(errno.ENOENT, "No such folder", folder) from error
    try:
        return step()
    except ftplib.error_perm as error:
        msg = f"The FTP server refused to write {path} ({_first_line(error)})"
        raise PermissionError(msg) from error


def _make_folders(ftp: ftplib.FTP, folder: str) -> None:
    """Make ``folder`` and its missing parents; _MissingFolder if this user cannot."""
    if not _made(ftp, folder):
        msg = f"The folder {folder} does not exist on the FTP server and this user cannot make it"
        raise _MissingFolder(msg)


def _made(ftp: ftplib.FTP, folder: str) -> bool:
    """Make ``folder`` and its missing parents; whether it exists afterwards."""
    if folder in ("", "/"):
        return True
    try:
        _make_folder(ftp, folder)
        return True
    except ftplib.error_perm:
        pass  # there already (a concurrent writer), or its parent is missing
    if _is_folder(ftp, folder):
        return True
    if not _made(ftp, posixpath.dirname(folder)):
        return False
    with contextlib.suppress(ftplib.error_perm):
        _make_folder(ftp, folder)
    return _is_folder(ftp, folder)


def _make_folder(ftp: ftplib.FTP, folder: str) -> None:
    ftp.voidcmd(f"MKD {folder}")


def _is_folder(ftp: ftplib.FTP, folder: str) -> bool:
    try:
        ftp.voidcmd(f"MLST {folder}")
    except ftplib.error_perm:
        return False
    return True


FTPBackend.steps = Steps(_size, _delete, _store, _rename_new, _make_folders, _files_modified)


def _unwrap(conn: socket.socket) -> None:
    """End TLS on a data connection before closing it, as ftplib does."""
    if isinstance(conn, ssl.SSLSocket):
        conn.unwrap()


def _first_line(error: BaseException | None) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


# --- streams ------------------------------------------------------------------------------


class _StoreWriter:
    """A stream written as one STOR on a connection of its own (blocking)."""

    def __init__(self, pool: _Pool, path: str) -> None:
        self._pool = pool
        self._path = path
        self._connection = pool.take()
        ftp = self._connection.ftp
        try:
            self._data = in_folder(ftp, FTPBackend.steps, path, _start_store, path)
        except _CLEAN:
            pool.give(self._connection)
            raise
        except BaseException:
            self._connection.close()
            raise

    def write(self, data: bytes | memoryview, /) -> None:
        self._data.sendall(data)

    def commit(self) -> None:
        try:
            with self._data:
                _unwrap(self._data)
            self._connection.ftp.voidresp()
        except BaseException:
            self._connection.close()
            raise
        self._pool.give(self._connection)

    def abort(self) -> None:
        """Close the transfer and delete what it stored; a dead connection is dropped
        and the delete tried on a new one (the storage removes the temp again anyway)."""
        self._data.close()
        try:
            _after_early_close(self._connection.ftp)
        except BaseException:
            self._connection.close()
            self._pool.run(_delete, self._path)
            return
        try:
            _delete(self._connection.ftp, self._path)
        except BaseException:
            self._connection.close()
            raise
        self._pool.give(self._connection)
