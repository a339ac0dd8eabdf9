"""Backends for the test suite: memory, local, and S3/GCS/Azure on real emulators.

Select them with `--backends=memory,s3` or the `LAKERY_BACKENDS` environment variable
(default: all). A test that uses the `backend` (or `root_url`) fixture runs once per selected
backend; `@pytest.mark.backends("s3", "gcs")` narrows that for one test or module. Each cloud
emulator starts once per session, and only if a selected test needs it; one that cannot
start fails the tests that need it (never skips them).

Two backends speak S3: `s3` (moto) and `seaweedfs` (SeaweedFS, a real S3 server). "s3" in a
`backends` marker means the S3 contract, which both run; a test that needs moto's internals
(its in-process state, IAM policies, a single-threaded server) says so with
`@pytest.mark.moto("why")`, and runs on `s3` only.
"""

from __future__ import annotations

import os

# Read when gcsfs is imported: otherwise gcsfs >= 2026 probes each bucket's layout over gRPC,
# and against fake-gcs-server every call waits for a 60 s timeout. Must precede any gcsfs import.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

import functools
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fsspec
import pytest
from servers import AzureServer, Emulator, GCSServer, S3Server, SeaweedFSServer
from servers_ftp import FTPServer
from servers_sftp import SFTPServer

DEFAULT_BACKENDS = ("memory", "local", "s3", "gcs", "azure")
# sftp is fsspec's paramiko client, sshfs the asyncssh one, on the same SFTP server; both
# claim sftp:// in fsspec, so one run takes one of them.
ALL_BACKENDS = (*DEFAULT_BACKENDS, "seaweedfs", "sftp", "sshfs", "ftp", "webdav")
S3_BACKENDS = ("s3", "seaweedfs")
"""moto and SeaweedFS: a marker naming "s3" names both (unless the test is marked moto)."""
SCHEMES: dict[str, tuple[str, ...]] = {
    "memory": ("memory",),
    "local": ("file",),
    "s3": ("s3",),
    "seaweedfs": ("s3",),
    "gcs": ("gs", "gcs"),
    "azure": ("abfs", "az"),
    "sftp": ("sftp", "ssh"),
    "sshfs": ("sftp", "ssh"),
    "ftp": ("ftp",),
    "webdav": ("webdav", "dav"),
}
PROTOCOLS = {
    "memory": "memory",
    "local": "file",
    "s3": "s3",
    "seaweedfs": "s3",
    "gcs": "gcs",
    "azure": "abfs",
    "sftp": "sftp",
    "sshfs": "sftp",
    "ftp": "ftp",
    "webdav": "webdav",
}


@dataclass
class BackendInfo:
    """One storage backend as the tests see it."""

    name: str
    storage_options: dict[str, Any]
    root: str  # bucket (cloud), base directory (local) or "" (memory), without any scheme
    server: Emulator | None = None  # the running emulator, for cloud backends
    _fs: fsspec.AbstractFileSystem | None = field(default=None, repr=False)

    @property
    def schemes(self) -> tuple[str, ...]:
        """URL schemes that address this backend; the first is the preferred one."""
        return SCHEMES[self.name]

    @property
    def protocol(self) -> str:
        """The canonical fsspec protocol."""
        return PROTOCOLS[self.name]

    @property
    def is_s3(self) -> bool:
        """Whether this is an S3 server (moto or SeaweedFS)."""
        return self.name in S3_BACKENDS

    @property
    def endpoint(self) -> str | None:
        return None if self.server is None else self.server.endpoint

    def new_url(self, scheme: str | None = None) -> str:
        """A fresh, unused root URL; for local, `scheme=""` gives a plain path."""
        scheme = self.schemes[0] if scheme is None else scheme
        if scheme not in self.schemes and not (self.name == "local" and scheme == ""):
            raise ValueError(f"{self.name} has no URL scheme {scheme!r}")
        path = f"{self.root}/{uuid.uuid4().hex}".lstrip("/")
        if self.name == "local":
            path = "/" + path  # the root is absolute: file:///tmp/...
            return path if scheme == "" else f"file://{path}"
        if authority := getattr(self.server, "authority", ""):  # host:port of a server
            return f"{scheme}://{authority}/{path}"
        return f"{scheme}://{path}"

    def fs(self) -> fsspec.AbstractFileSystem:
        """A sync-mode filesystem for assertions, independent of the code under test's
        instances and without a listings cache."""
        if (factory := getattr(self.server, "filesystem", None)) is not None:
            return factory()  # a new connection each time: it may have been restarted
        fs = self._fs
        client = getattr(fs, "_client", None)  # sshfs: its connection died with the server
        if fs is not None and self.name == "sftp" and not fs.client.get_transport().is_active():
            fs = None  # the server was restarted: paramiko does not reconnect by itself
        if fs is None or (client is not None and client.is_closed()):
            options = {"auto_mkdir": True} if self.name == "local" else self.storage_options
            # A server named in URLs (host, port, user) is named here too.
            options = {**getattr(self.server, "connect_options", {}), **options}
            # paramiko hands every option to SSHClient.connect, sshfs to asyncssh, webdav4
            # to httpx; none of them keeps a listings cache.
            no_cache = ("sftp", "sshfs", "webdav")
            caches = {} if self.name in no_cache else {"use_listings_cache": False}
            if self.name == "sftp":
                options.pop("known_hosts", None)  # the storage's option, not paramiko's
                cls = _sftp_making_folders()
            elif self.name == "webdav":
                # No idle connections: this client outlives server restarts, and a pooled
                # connection the server dropped would be collected unclosed, a
                # ResourceWarning (an error here) in whichever test runs then.
                import httpx

                options["limits"] = httpx.Limits(max_keepalive_connections=0)
                cls = fsspec.get_filesystem_class(self.protocol)
            elif self.name == "seaweedfs":
                cls = _s3_without_folder_objects()
            else:
                cls = fsspec.get_filesystem_class(self.protocol)
            fs = self._fs = cls(skip_instance_cache=True, **caches, **options)
            if self.name == "webdav":
                fs.cat_file = _plain_get(fs)  # type: ignore[method-assign]
        return fs

    def key(self, url_or_key: str) -> str:
        """The object key within the bucket for a URL of this backend (or a key as is)."""
        if "://" not in url_or_key:
            return url_or_key.lstrip("/")
        if getattr(self.server, "authority", ""):  # user@host:port before the path
            path = fsspec.get_filesystem_class(self.protocol)._strip_protocol(url_or_key)
        else:
            path = url_or_key.split("://", 1)[1]
        bucket, _, key = path.lstrip("/").partition("/")
        if bucket != self.root:
            raise ValueError(f"{url_or_key!r} is not in bucket {self.root!r}")
        return key

    @property
    def keeps_content_type(self) -> bool:
        """Whether objects carry content type and encoding as metadata (FTP, SFTP have none)."""
        return self.name in (*S3_BACKENDS, "gcs", "azure")

    @property
    def lists_uploads(self) -> bool:
        """Whether the service keeps unfinished uploads that can be listed (S3, Azure)."""
        return self.name in (*S3_BACKENDS, "azure")

    def start_upload(self, path: str) -> None:
        """Leave an unfinished upload to `path` (`bucket/key`, as storages name paths)."""
        assert self.server is not None
        self.server.start_upload(self._in_bucket(path))

    def open_uploads(self, prefix: str) -> list[str]:
        """Paths (`bucket/key`) of the unfinished uploads under `prefix` (`bucket/key`),
        listed with the cloud's own API."""
        assert self.server is not None
        keys = self.server.open_uploads(self._in_bucket(prefix))
        return [f"{self.root}/{key}" for key in keys]

    def _in_bucket(self, path: str) -> str:
        bucket, _, key = path.lstrip("/").partition("/")  # SFTP roots are absolute
        if bucket != self.root:
            raise ValueError(f"{path!r} is not in bucket {self.root!r}")
        return key

    def overwrite(self, path: str, data: bytes) -> None:
        """Replace the object at ``path`` (as the filesystem names it: bucket first) behind
        the storage's back. Clouds use their own clients: gcsfs and adlfs hand aiohttp raw
        bytes, which it warns about (an error here) above 1 MiB."""
        if self.server is None:
            self.fs().pipe_file(path, data)
        else:
            bucket, _, key = path.lstrip("/").partition("/")  # SFTP roots are absolute
            assert bucket == self.root, f"{path!r} is not in bucket {self.root!r}"
            self.server.put(key, data)

    def metadata(self, path_in_bucket: str) -> dict[str, str | None]:
        """`content_type` and `content_encoding` of an object, read with the cloud's own API.
        Takes a key in the bucket or a full URL."""
        if self.server is None or not self.keeps_content_type:
            raise NotImplementedError(f"{self.name} keeps no content metadata")
        return self.server.metadata(self.key(path_in_bucket))


@functools.cache
def _sftp_making_folders() -> type[fsspec.AbstractFileSystem]:
    """fsspec's paramiko filesystem that makes the parent folders of what it writes (as
    local's ``auto_mkdir``): the tests write nested paths behind the storage's back."""
    from fsspec.implementations.sftp import SFTPFileSystem

    class MakingFolders(SFTPFileSystem):
        def _open(self, path: str, mode: str = "rb", **kwargs: Any) -> Any:
            if "w" in mode:
                self.makedirs(self._parent(path), exist_ok=True)
            return super()._open(path, mode, **kwargs)

    return MakingFolders


@functools.cache
def _s3_without_folder_objects() -> type[fsspec.AbstractFileSystem]:
    """s3fs whose ``find`` never reports the folder it was asked about: SeaweedFS (a
    filer) keeps an emptied folder as a folder object (``key/``), which s3fs's find of
    that folder reports as a file of the folder's own name. The storage wrote no such
    object; the tests count the objects it wrote."""
    from s3fs import S3FileSystem

    class WithoutFolderObjects(S3FileSystem):
        def find(self, path: str, *args: Any, **kwargs: Any) -> Any:
            found = super().find(path, *args, **kwargs)
            folder = self._strip_protocol(path).rstrip("/")
            if isinstance(found, dict):
                return {k: v for k, v in found.items() if k.rstrip("/") != folder}
            return [item for item in found if item.rstrip("/") != folder]

    return WithoutFolderObjects


def _plain_get(fs: Any) -> Any:
    """``cat_file`` as one GET: webdav4's own (through its file objects) leaves the GET's
    connection unclosed, a ResourceWarning when collected (the storage never uses it)."""

    def cat_file(path: str, start: int | None = None, end: int | None = None, **_: Any) -> bytes:
        response = fs.client.http.get(fs.client.join_url(fs._strip_protocol(path)))
        if response.status_code == 404:
            raise FileNotFoundError(path)
        response.raise_for_status()
        return response.content[start:end]

    return cat_file


def selected_backends(config: pytest.Config) -> list[str]:
    raw = str(config.getoption("backends"))
    names = [name.strip() for name in raw.split(",") if name.strip()]
    unknown = [name for name in names if name not in ALL_BACKENDS]
    if unknown or not names:
        raise pytest.UsageError(
            f"--backends: unknown backend(s) {unknown or raw!r}; choose from {ALL_BACKENDS}"
        )
    return list(dict.fromkeys(names))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--backends",
        default=os.environ.get("LAKERY_BACKENDS") or ",".join(DEFAULT_BACKENDS),
        help=f"comma-separated backends to test (env LAKERY_BACKENDS); of {ALL_BACKENDS}",
    )


ENGINE_TESTS = Path(__file__).resolve().parent / "engines"
"""Dask and Ray tests (`nox -s engines`, extra `engines`): collected only when named."""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """Leave out tests/engines unless it (or a file in it) is named on the command line."""
    if collection_path != ENGINE_TESTS:
        return None
    invoked = config.invocation_params.dir
    for arg in config.args:
        named = (invoked / arg.split("::")[0]).resolve()
        if named == ENGINE_TESTS or ENGINE_TESTS in named.parents:
            return None
    return True


def pytest_configure(config: pytest.Config) -> None:
    names = selected_backends(config)  # fail early on a bad --backends
    _choose_sftp_client(names)
    config.addinivalue_line(
        "markers", "backends(*names): run this test only on these backends (if selected)"
    )
    config.addinivalue_line(
        "markers", "moto(why): the test needs moto's internals; of the S3 servers, moto only"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests that take no backend run once, where `local` is selected (the default, and
    `tests(backend='all')`): a server's session runs that server's tests, not the command
    line's and the inputs' again."""
    if "local" in selected_backends(config):
        return
    kept: list[pytest.Item] = []
    left: list[pytest.Item] = []
    for item in items:
        (kept if "backend" in getattr(item, "fixturenames", ()) else left).append(item)
    if left:
        config.hook.pytest_deselected(items=left)
        items[:] = kept


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "backend" not in metafunc.fixturenames:
        return
    names = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker("backends")
    if marker is not None:
        unknown = set(marker.args) - set(ALL_BACKENDS)
        if unknown:
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: unknown backends {unknown}")
        wanted = set(marker.args)
        if "s3" in wanted and metafunc.definition.get_closest_marker("moto") is None:
            wanted.add("seaweedfs")  # the S3 contract: a real S3 server runs it too
        names = [name for name in names if name in wanted]
        if not names:
            reason = f"needs backends {marker.args}, none selected by --backends"
            skip = pytest.param(None, id="-".join(marker.args), marks=pytest.mark.skip(reason))
            metafunc.parametrize("backend", [skip], indirect=True)
            return
    metafunc.parametrize("backend", names, ids=names, indirect=True)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    with S3Server() as server:
        yield server


@pytest.fixture(scope="session")
def seaweedfs_server() -> Iterator[SeaweedFSServer]:
    with SeaweedFSServer() as server:
        yield server


@pytest.fixture(scope="session")
def sftp_server() -> Iterator[SFTPServer]:
    with SFTPServer() as server:
        yield server


class SSHFSServer:
    """The SFTP server as sshfs reaches it: host keys are checked, so its options name
    the server's ``known_hosts`` file (everything else is the server's)."""

    def __init__(self, server: SFTPServer) -> None:
        self.server = server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)

    @property
    def storage_options(self) -> dict[str, Any]:
        return {**self.server.storage_options, "known_hosts": str(self.server.known_hosts)}

    @property
    def connect_options(self) -> dict[str, Any]:
        return {**self.server.connect_options, "known_hosts": str(self.server.known_hosts)}


@pytest.fixture(scope="session")
def ftp_server() -> Iterator[FTPServer]:
    with FTPServer() as server:
        yield server


@pytest.fixture(scope="session")
def sshfs_server(sftp_server: SFTPServer) -> SSHFSServer:
    return SSHFSServer(sftp_server)


def _choose_sftp_client(names: list[str]) -> None:
    """Serve sftp:// and ssh:// with the client under test: fsspec's paramiko one
    (backend "sftp") or sshfs (backend "sshfs", which claims both names once installed)."""
    if "sftp" in names and "sshfs" in names:
        raise pytest.UsageError("--backends: sftp and sshfs both claim sftp://; run them apart")
    if "sftp" in names:
        cls = "fsspec.implementations.sftp.SFTPFileSystem"
    elif "sshfs" in names:
        cls = "sshfs.spec.SSHFileSystem"
    else:
        return
    os.environ[SFTP_CLIENT_VARIABLE] = cls  # for child processes: see processes.py
    use_sftp_client(cls)


SFTP_CLIENT_VARIABLE = "LAKERY_TEST_SFTP_CLIENT"


def use_sftp_client(cls: str) -> None:
    """Serve sftp:// and ssh:// with the fsspec class named ``cls``."""
    for protocol in ("sftp", "ssh"):
        fsspec.register_implementation(protocol, cls, clobber=True)


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[GCSServer]:
    with GCSServer() as server:
        yield server


@pytest.fixture(scope="session")
def azure_server() -> Iterator[AzureServer]:
    with AzureServer() as server:
        yield server


@pytest.fixture(scope="session")
def webdav_server() -> Iterator[Emulator]:
    from servers_webdav import WebdavServer

    with WebdavServer() as server:
        yield server


@pytest.fixture(scope="session")
def backend(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> BackendInfo:
    """The backend under test (parametrized over the selected backends)."""
    name: str = request.param
    if name == "memory":
        return BackendInfo(name, {}, "")
    if name == "local":
        root: Path = tmp_path_factory.mktemp("local-backend")
        return BackendInfo(name, {}, str(root.resolve()))
    server: Emulator = request.getfixturevalue(f"{name}_server")
    options = dict(server.storage_options)
    if name == "sftp":
        # Host keys are checked: the server's is in its known_hosts file. A pointer names
        # no server, so commands that read one need host, port and user as options.
        options["known_hosts"] = str(server.known_hosts)  # type: ignore[attr-defined]
        options.update(server.connect_options)  # type: ignore[attr-defined]
    return BackendInfo(name, options, server.bucket, server)


@pytest.fixture
def root_url(backend: BackendInfo) -> str:
    """A fresh, unused root URL on the backend under test."""
    return backend.new_url()
