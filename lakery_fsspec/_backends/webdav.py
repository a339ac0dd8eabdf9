"""WebDAV through webdav4's fsspec filesystem (``webdav://``, ``dav://``; over HTTPS:
``webdavs://``, ``davs://``).

The data path speaks HTTP itself through the filesystem's own httpx client (its base URL,
auth, timeouts and connection pool): a blob is a PUT to a temp path and a MOVE with
``Overwrite: F`` (a 412 refusal is "already stored"); a stream is one chunked PUT fed
block by block; reads are ranged GETs. webdav4's own calls (``pipe_file``, ``mv``, file
objects) cost 3-5 requests per object, spool streams to local disk and upload an
abandoned stream when it is garbage-collected; they are used here only for listings.
"""

from __future__ import annotations

import contextlib
import errno
import posixpath
import threading
from collections.abc import Iterator, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

import fsspec

from lakery_fsspec._backends.clock import Aged, age, server_time
from lakery_fsspec._backends.diagnostics import Diagnosis, Diagnostics
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._backends.staged import StagedFiles

if TYPE_CHECKING:
    import httpx
    from labox.core.storage import Digest

    from lakery_fsspec._writers import Writer

__all__ = ["Webdav", "WebdavBackend", "WebdavDiagnostics", "WebdavError"]

_HTTPS_SCHEMES = ("webdavs", "davs")
_CLASS = "webdav4.fsspec.WebdavFileSystem"


def _register_schemes() -> None:
    """Teach fsspec the names webdav4 does not register itself (it claims ``dav`` but
    only ``webdav`` is in fsspec's registry), by class path: webdav4 stays unimported."""
    for name in ("dav", *_HTTPS_SCHEMES):
        if name not in fsspec.available_protocols():
            fsspec.register_implementation(name, _CLASS, errtxt="Install webdav4 for WebDAV")


_register_schemes()


class WebdavError(OSError):
    """A WebDAV request the server refused: ``status_code`` is the HTTP status and
    ``server`` the server's ``scheme://host:port`` (never credentials)."""

    def __init__(self, method: str, path: str, status: int, reason: str, server: str) -> None:
        code = errno.ENOENT if status == 404 else errno.EACCES if status in (401, 403) else None
        super().__init__(code, f"{method} {path or '/'}: {status} {reason}".rstrip(), path)
        self.method = method
        self.status_code = status
        self.server = server


class WebdavNotFound(WebdavError, FileNotFoundError):
    """404: no such object or folder."""


class WebdavDenied(WebdavError, PermissionError):
    """401 (the user or password is wrong) or 403 (the user may not do this)."""


class WebdavBackend(StagedFiles):
    """WebDAV (RFC 4918) servers through webdav4's filesystem and its httpx client.

    - Blobs: PUT to a temp path, then MOVE to the final path with ``Overwrite: F``, in
      one request the server decides: a 412 means the object is already stored. Folders
      are made only when a request says they are missing (409), the temp folder once
      per process.
    - Streams: one chunked PUT to the temp path, fed block by block as the stream
      comes (one block held at a time), then the same MOVE. An aborted stream stops
      sending at once and its temp is deleted; nothing is sent after an abort.
    - The storage root's top folder (the first segment under the server's base URL) is
      never created: a missing one is reported, as a missing bucket is on a cloud.
    - Content type goes along with each PUT; servers that derive it from the file name
      (wsgidav, Apache, Nextcloud) ignore it. Content encoding is not sent (wsgidav
      refuses any PUT carrying one).
    """

    min_range_size = 4 * 2**20
    """GETs cost a round trip each, with the server's per-request work."""

    def __init__(self, protocol: str, bridge: Any) -> None:
        super().__init__(protocol, bridge)
        self._folders: set[str] = set()
        """Folders this process made or found (per backend: per filesystem and process)."""

    # --- HTTP -----------------------------------------------------------------------------

    @property
    def _http(self) -> httpx.Client:
        return self.fs.client.http

    def _url(self, path: str, folder: bool = False) -> httpx.URL:
        return self.fs.client.join_url(path, add_trailing_slash=folder)

    def _request(
        self, method: str, path: str, *, folder: bool = False, **kwargs: Any
    ) -> httpx.Response:
        return self._http.request(method, self._url(path, folder), **kwargs)

    def _error(self, method: str, path: str, response: httpx.Response) -> WebdavError:
        status = response.status_code
        cls = (
            WebdavNotFound
            if status == 404
            else WebdavDenied
            if status in (401, 403)
            else WebdavError
        )
        return cls(method, path, status, response.reason_phrase, _server(str(response.url)))

    def _check(
        self, method: str, path: str, response: httpx.Response, ok: tuple[int, ...]
    ) -> httpx.Response:
        if response.status_code not in ok:
            raise self._error(method, path, response)
        return response

    # --- folders --------------------------------------------------------------------------

    def _ensure_folder(self, folder: str) -> None:
        """Make ``folder`` and its parents unless this process knows they exist
        (blocking). The top folder is never made: FileNotFoundError if it is missing."""
        if folder in self._folders or not folder:
            return
        if "/" not in folder:
            if not self._is_folder(folder):
                server = _server(str(self.fs.client.base_url))
                raise WebdavNotFound("PROPFIND", folder, 404, "Not Found", server)
            self._folders.add(folder)
            return
        response = self._request("MKCOL", folder, folder=True)
        if response.status_code == 409:  # a parent is missing
            self._ensure_folder(posixpath.dirname(folder))
            response = self._request("MKCOL", folder, folder=True)
        # 405: it exists already. Anything else may be two writers' race: look.
        if response.status_code not in (200, 201, 405) and not self._is_folder(folder):
            raise self._error("MKCOL", folder, response)
        self._folders.add(folder)

    def _is_folder(self, path: str) -> bool:
        response = self._request("PROPFIND", path, folder=True, headers={"Depth": "0"})
        if response.status_code in (401, 403):
            raise self._error("PROPFIND", path, response)
        return response.status_code == 207

    def _forget(self, folder: str) -> None:
        self._folders.discard(folder)

    def _missing(self, folder: str) -> FileNotFoundError:
        """A 409's meaning: ``folder`` is missing (made, and the request sent again)."""
        self._forget(folder)
        return FileNotFoundError(errno.ENOENT, "No such folder", folder)

    # --- objects --------------------------------------------------------------------------

    async def size(self, path: str) -> int | None:
        return await self.io.thread(partial(self._size, path))

    def _size(self, path: str) -> int | None:
        response = self._request("HEAD", path, headers={"Accept-Encoding": "identity"})
        if response.status_code == 404:
            return None
        self._check("HEAD", path, response, (200,))
        return int(response.headers["Content-Length"])

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        return await self.io.thread(partial(self._get, path, start, end))

    def _get(self, path: str, start: int | None, end: int | None) -> bytes:
        # identity, and raw bytes: the object exactly as stored, never decompressed.
        headers = {"Accept-Encoding": "identity"}
        ranged = bool(start) or end is not None
        if ranged:
            if start is None or start < 0 or (end is not None and end < 0):
                return self.fs.cat_file(path, start=start, end=end)  # relative to the end
            if end is not None and end <= start:
                return b""
            headers["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        with self._http.stream("GET", self._url(path), headers=headers) as response:
            if response.status_code == 416:  # the range starts at or past the end
                return b""
            self._check("GET", path, response, (200, 206))
            data = b"".join(response.iter_raw())
            whole = response.status_code == 200
        return data[start:end] if ranged and whole else data

    async def _write_file(self, path: str, data: bytes, digest: Digest | None = None) -> None:
        headers = {} if digest is None else self._headers(digest)
        await self.io.thread(partial(self._put, path, data, headers))

    def _put(self, path: str, data: bytes, headers: dict[str, str]) -> None:
        folder = posixpath.dirname(path)
        self._ensure_folder(folder)  # before: a refused PUT has sent its whole body
        # In slices of a known total: httpcore sends a body part with a loop that copies
        # what is left after each send(), quadratic in the part's size.
        headers = {**headers, "Content-Length": str(len(data))}
        response = self._request("PUT", path, content=_slices(data), headers=headers)
        if response.status_code == 409:  # the folder went away behind this process's back
            raise self._missing(folder)
        self._check("PUT", path, response, (200, 201, 204))

    def _headers(self, digest: Digest) -> dict[str, str]:
        content_type = digest.get("content_type")
        return {"Content-Type": content_type} if content_type else {}

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        """A chunked PUT fed block by block (blocking; called in a worker thread)."""
        self._ensure_folder(posixpath.dirname(path))
        return StreamedPut(self, path, self._headers(digest))

    async def _rename_new(self, source: str, destination: str) -> bool:
        return await self.io.thread(partial(self._move, source, destination))

    def _move(self, source: str, destination: str) -> bool:
        """MOVE with ``Overwrite: F``: a 412 means ``destination`` exists."""
        # Without the user and password a base_url may carry (httpx sends them as
        # Authorization): a Destination with userinfo names another server to WebDAV.
        target = self._url(destination).copy_with(username=None, password=None)
        headers = {"Destination": str(target), "Overwrite": "F"}
        response = self._request("MOVE", source, headers=headers)
        if response.status_code == 409:  # the destination's folder is missing
            raise self._missing(posixpath.dirname(destination))
        if response.status_code == 412:  # Overwrite: F refused: already stored
            return False  # the source stays: the caller removes it
        if response.status_code >= 500 and self._size(destination) is not None:
            # Two MOVEs raced to one destination and this one lost on the server's side
            # (wsgidav checks Overwrite: F, then renames, asserting nothing is there: the
            # loser gets a 500). The object is stored, complete: the rename is atomic.
            return False
        self._check("MOVE", source, response, (201, 204))
        return True

    async def _make_folders(self, folder: str) -> None:
        await self.io.thread(partial(self._ensure_folder, folder))

    async def remove(self, path: str) -> None:
        await self.io.thread(partial(self._delete, path))

    def _delete(self, path: str) -> None:
        response = self._request("DELETE", path)
        if response.status_code != 404:
            self._check("DELETE", path, response, (200, 204))

    # --- listing --------------------------------------------------------------------------

    async def list_aged(self, folder: str) -> list[Aged]:
        """One PROPFIND: the files in ``folder``, aged by the server's clock (its
        ``Date`` answer minus each file's ``getlastmodified``)."""
        return await self.io.thread(partial(self._list_aged, folder))

    def _list_aged(self, folder: str) -> list[Aged]:
        from webdav4.multistatus import parse_multistatus_response  # optional: lazily

        response = self._request("PROPFIND", folder, folder=True, headers={"Depth": "1"})
        self._check("PROPFIND", folder, response, (207,))
        now = server_time(response.headers.get("Date"))
        base = self.fs.client.base_url
        found: list[Aged] = []
        for item in parse_multistatus_response(response).responses.values():
            properties = item.properties
            if properties.resource_type != "file":
                continue
            modified = properties.modified
            found.append(
                Aged(item.path_relative_to(base), None if modified is None else age(now, modified))
            )
        return found

    async def root_missing(self, root: str, error: FileNotFoundError) -> bool:
        top = root.strip("/").split("/", 1)[0]
        return not await self.io.thread(partial(self._is_folder, top))


class WebdavDiagnostics(Diagnostics):
    """WebDAV's words: HTTP statuses, the base URL, the login."""

    root_kind = "top folder"
    endpoint_option = "base_url"
    credentials_hint = (
        'Give the user and password as -o auth=\'["USER", "PASSWORD"]\' (storage option '
        "auth=('USER', 'PASSWORD')), or in the URL: webdav://USER:PASSWORD@HOST:PORT/folder."
    )

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        # webdav4 retries 5xx answers with backoff (1 s, 2 s): once is enough here.
        return {"timeout": timeout, "retry": False, **options}

    @classmethod
    def explain(cls, error: BaseException, chain: list[BaseException]) -> Diagnosis | None:
        for item in chain:
            if isinstance(item, WebdavError):
                return _explain_status(item)
        refused = any(isinstance(item, ConnectionRefusedError) for item in chain)
        server = next((found for item in chain if (found := _request_server(item))), None)
        if refused and server:  # (the generic words name a server given as base_url)
            return Diagnosis(
                "unreachable",
                f"Cannot connect to the WebDAV server at {server}: connection refused "
                "(nothing is listening there).",
                "Check the host and port in the URL (webdav://HOST:PORT/folder) or in "
                "base_url, and that the server is running.",
            )
        return None


class Webdav(ProtocolSpec):
    """WebDAV through webdav4's filesystem and its httpx client."""

    names = ("webdav", "dav")
    filesystem = _CLASS
    extra = "webdav"
    backend = WebdavBackend
    diagnostics = WebdavDiagnostics

    @classmethod
    def endpoint(cls, options: Mapping[str, Any]) -> str | None:
        base = options.get("base_url")
        return _server(str(base)) if base else None

    @classmethod
    def split_url(
        cls, fs_class: type[Any], url: str, options: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any]]:
        """``webdav://[USER:PASSWORD@]HOST[:PORT]/folder`` names the server (HTTP; HTTPS
        for ``webdavs://``/``davs://``) and the root's path on it; with a ``base_url``
        storage option, the URL's path is relative to that URL instead (webdav4's own
        convention: ``webdav://folder``). Either way the root is the path under the base
        URL, without the host, so pointers survive a change of server name."""
        scheme, _, rest = url.partition("://")
        if "base_url" in options:
            return rest.strip("/"), {}
        parts = urlsplit(f"//{rest}")
        try:
            port = parts.port
        except ValueError:
            port = -1
        if not parts.hostname or port == -1:
            msg = (
                f"The WebDAV URL {scheme}://{parts.path or rest} names no server: write it as "
                f"{scheme}://HOST[:PORT]/folder, or give the server as storage option base_url "
                f"(base_url='https://HOST/dav') with {scheme}://folder."
            )
            raise ValueError(msg)
        host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
        http = "https" if scheme in _HTTPS_SCHEMES else "http"
        found: dict[str, Any] = {"base_url": f"{http}://{host}{f':{port}' if port else ''}"}
        if parts.username is not None:
            found["auth"] = (unquote(parts.username), unquote(parts.password or ""))
        return parts.path.strip("/"), found

    @classmethod
    def filesystem_options(cls, options: dict[str, Any]) -> dict[str, Any]:
        auth = options.get("auth")
        if isinstance(auth, list):  # -o auth='["user", "password"]' on the command line
            options = {**options, "auth": tuple(auth)}  # pyright: ignore[reportUnknownArgumentType]
        if "limits" not in options:
            import httpx  # webdav4's own dependency: lazily, as webdav4 is optional

            # No cap on idle connections: httpcore (1.0.9) closes an idle connection the
            # moment the pool holds more than the cap, even one it has just handed to a
            # waiting thread, which then reads from a closed socket (EBADF). This
            # backend's threads (up to 40, plus one per stream) all share the client.
            limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
            options = {**options, "limits": limits}
        return options

    @staticmethod
    def transient(error: BaseException) -> bool:
        # httpx's transport errors (refused, reset, cut off, timed out), by name: some
        # carry no OSError in their chain (a server that closed the connection mid-answer).
        names = {cls.__name__ for cls in type(error).__mro__}
        return type(error).__module__.startswith(("httpx", "httpcore")) and bool(
            names & {"NetworkError", "TimeoutException", "RemoteProtocolError"}
        )


def _explain_status(error: WebdavError) -> Diagnosis | None:
    at = f" at {error.server}" if error.server else ""
    status = error.status_code
    if status == 401:
        return Diagnosis(
            "bad-credentials",
            f"The WebDAV server{at} rejected the user name or password (401 Unauthorized).",
            WebdavDiagnostics.credentials_hint,
        )
    if status == 403:
        return Diagnosis(
            "permission-denied",
            f"The WebDAV server{at} refused this user permission: {error.strerror} "
            "(403 Forbidden). The folder, or the whole share, is read-only for this user.",
            "Use a folder this user may write to, or ask the server's administrator for "
            "write access to it.",
        )
    if status == 404 and error.method == "PROPFIND":  # a listing, or the top folder
        top = (error.filename or "").strip("/").split("/", 1)[0]
        return Diagnosis(
            "no-bucket",
            f"The folder {top!r} does not exist on the WebDAV server{at}: it is the storage "
            "root's top folder, which lakery-fsspec never creates (it makes the folders "
            "below it).",
            f"Create the folder {top!r} on the server (any WebDAV client, or the server's "
            "file manager), or correct the URL's path.",
        )
    return None


def _slices(data: bytes) -> Iterator[memoryview]:
    """``data`` in views of at most ``_CHUNK`` bytes (no copies)."""
    view = memoryview(data)
    for start in range(0, len(view), _CHUNK):
        yield view[start : start + _CHUNK]


def _request_server(error: BaseException) -> str | None:
    """``scheme://host:port`` of the request an httpx error was raised for, if any."""
    try:
        request = getattr(error, "request", None)  # httpx raises RuntimeError if unset
    except RuntimeError:
        return None
    url = getattr(request, "url", None)
    return None if url is None else _server(str(url))


def _server(url: str) -> str:
    """``scheme://host[:port]`` of a URL, without credentials or path."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}"


_END = object()
_CHUNK = 64 * 2**10
"""Bytes per part of a request body handed to httpx (per HTTP chunk of a streamed PUT)."""
_ABORT = object()


class _Aborted(Exception):
    """Raised inside a streamed PUT's body to cut the request off."""


class StreamedPut:
    """One chunked PUT whose body is handed over block by block (a Writer).

    The request runs in a thread of its own, pulling blocks from a one-block slot:
    ``write`` returns once the request has taken its block (so the caller prepares the
    next one while it is sent), and holds nothing itself. ``commit`` ends the body and
    checks the answer; ``abort`` cuts the request off without sending another byte and
    deletes whatever the server kept. The request starts with the first block, so an
    empty stream sends nothing.
    """

    def __init__(self, backend: WebdavBackend, path: str, headers: dict[str, str]) -> None:
        self._backend = backend
        self._path = path
        self._headers = headers
        self._ready = threading.Condition()
        self._slot: object | None = None
        self._thread: threading.Thread | None = None
        self._finished = False
        self._outcome: httpx.Response | BaseException | None = None

    def write(self, data: bytes | memoryview, /) -> None:
        # Views of immutable bytes are sent as they are; anything else is copied, as the
        # caller may reuse its buffer while the request still sends it.
        view = isinstance(data, memoryview) and type(data.obj) is bytes
        self._hand(data if view or type(data) is bytes else bytes(data))

    def commit(self) -> None:
        self._hand(_END)
        assert self._thread is not None
        self._thread.join()
        outcome = self._outcome
        if isinstance(outcome, BaseException):
            raise outcome
        assert outcome is not None
        if outcome.status_code == 409:  # the temp folder was removed behind our back
            self._backend._forget(posixpath.dirname(self._path))
        self._backend._check("PUT", self._path, outcome, (200, 201, 204))

    def abort(self) -> None:
        with self._ready:
            started = self._thread is not None
            if started and not self._finished:
                self._slot = _ABORT
                self._ready.notify_all()
        if started:
            assert self._thread is not None
            self._thread.join()
            with contextlib.suppress(FileNotFoundError):
                self._backend._delete(self._path)

    def _hand(self, item: object) -> None:
        """Give the request one block (or the end), and wait until it has taken it."""
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._send, name="lakery-fsspec-put", daemon=True
            )
            self._thread.start()
        with self._ready:
            self._slot = item
            self._ready.notify_all()
            while self._slot is item and not self._finished:
                self._ready.wait()
            if self._slot is item:  # the request ended without it: it failed
                self._slot = None
                outcome = self._outcome
                if isinstance(outcome, BaseException):
                    raise outcome
                msg = f"the PUT of {self._path} ended before its body was sent"
                raise ConnectionResetError(errno.ECONNRESET, msg)

    def _body(self) -> Iterator[bytes | memoryview]:
        while True:
            with self._ready:
                while self._slot is None:
                    self._ready.wait()
                item, self._slot = self._slot, None
                self._ready.notify_all()
            if item is _END:
                return
            if item is _ABORT:
                raise _Aborted
            assert isinstance(item, bytes | memoryview)
            # Chunks of at most 64 KiB: servers that keep a chunk whole in a buffer and
            # slice each small read off its front (cheroot, under wsgidav) copy the rest of
            # the chunk on every read, quadratic in its size.
            view = memoryview(item)
            for start in range(0, len(view), _CHUNK):
                yield view[start : start + _CHUNK]

    def _send(self) -> None:
        backend = self._backend
        try:
            outcome: httpx.Response | BaseException = backend._request(
                "PUT", self._path, content=self._body(), headers=self._headers
            )
        except BaseException as error:  # delivered to the writer's caller
            outcome = error
        with self._ready:
            self._outcome = outcome
            self._finished = True
            self._ready.notify_all()
