"""Faults: dead and silent servers, broken streams and digests, cancellation.

A backend that goes away must give a StorageUnavailableError naming the operation and the
URL within the storage's `timeout`, never hang and never leave a partial object at the
final path; once it is back, the same write succeeds. The caller's own exceptions pass
through unchanged, and every failure removes its temp object.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import anyio
import pytest
from conftest import BackendInfo
from helpers import Stream, StreamBroke, chunked, digest_of, payload
from labox.common.exceptions import NoStorageData

from lakery_fsspec import FsspecStorage, StorageUnavailableError
from lakery_fsspec._backends import spec_for
from lakery_fsspec._errors import unavailable
from lakery_fsspec._writers import SerialWriter

CLOUDS = ("s3", "gcs", "azure")
SERVERS = (*CLOUDS, "sftp", "webdav")
"""Backends on a server of their own, which a test can silence, stop and restart."""
BLOCK = 256 * 1024
"""chunk_size of the storages here; the clouds round their upload blocks up (5-8 MiB)."""


def block_size(backend: BackendInfo) -> int:
    return spec_for(backend.protocol).backend.block_size(BLOCK)


def make(backend: BackendInfo, url: str, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=BLOCK, **kwargs)


def objects(backend: BackendInfo, url: str) -> list[str]:
    """Every object under a root URL, as paths relative to it."""
    fs = backend.fs()
    root = fs._strip_protocol(url).rstrip("/")
    return sorted(path[len(root) + 1 :] for path in fs.find(root))


def pending_uploads(backend: BackendInfo, url: str) -> list[str]:
    """Unfinished uploads under a root: S3 multipart uploads, Azure uncommitted blobs."""
    if not (backend.is_s3 or backend.name == "azure"):
        return []
    prefix = backend.key(url) + "/"
    if backend.is_s3:
        client = backend.server.client  # type: ignore[union-attr]
        found = client.list_multipart_uploads(Bucket=backend.root, Prefix=prefix)
        return [upload["Key"] for upload in found.get("Uploads", [])]
    container = backend.server.container  # type: ignore[union-attr]
    blobs = container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
    return [blob.name for blob in blobs]


class HookedStream(Stream):
    """A Stream that calls ``hook(index)`` (may be async) before yielding chunk ``index``."""

    def __init__(self, chunks: list[bytes], hook: Callable[[int], Any]) -> None:
        super().__init__(chunks)
        self._hook = hook

    async def __aiter__(self) -> AsyncIterator[bytes]:
        index = 0
        async for chunk in super().__aiter__():
            result = self._hook(index)
            if asyncio.iscoroutine(result):
                await result
            index += 1
            yield chunk


@contextlib.contextmanager
def black_hole() -> Iterator[str]:
    """An endpoint that accepts TCP connections and never answers; closed on exit."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1024)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def options_at(backend: BackendInfo, endpoint: str) -> dict[str, Any]:
    """The backend's storage options pointed at another endpoint."""
    assert backend.endpoint is not None
    if backend.name == "sftp":  # the server is host and port options
        return {**backend.storage_options, "port": int(endpoint.rsplit(":", 1)[1])}
    return {
        key: value.replace(backend.endpoint, endpoint) if isinstance(value, str) else value
        for key, value in backend.storage_options.items()
    }


# --- a server that does not answer ----------------------------------------------------------


async def silent_storage(backend: BackendInfo, endpoint: str, seconds: float) -> FsspecStorage:
    """A storage under ``<root>/silent`` whose backend is the unanswering ``endpoint``,
    used once: its client is made on first use, CPU work that no request's timeout bounds
    (and that takes longer than a timeout on a loaded machine)."""
    url = f"{backend.schemes[0]}://{backend.root}/silent"
    if backend.name == "sftp":  # user@host:port, the port replaced by the options
        url = f"sftp://{backend.server.authority}/{backend.root}/silent"  # type: ignore[union-attr]
    storage = FsspecStorage(
        url, storage_options=options_at(backend, endpoint), chunk_size=BLOCK, timeout=seconds
    )
    pointer = {"protocol": backend.protocol, "root": storage.location.root, "path": "warm/up"}
    with pytest.raises(StorageUnavailableError):
        await storage.read_data(pointer)  # type: ignore[arg-type]
    return storage


@pytest.mark.backends(*SERVERS)
async def test_silent_server_fails_within_the_timeout(backend: BackendInfo) -> None:
    timeout = 0.3
    with black_hole() as endpoint:
        storage = await silent_storage(backend, endpoint, timeout)
        root = storage.location.root
        pointer = {"protocol": backend.protocol, "root": root, "path": "a/b"}
        data = payload(3 * block_size(backend))
        stream = Stream(chunked(data, BLOCK))
        operations: dict[str, Callable[[], Any]] = {
            "write_data": lambda: storage.write_data(b"x", digest_of(b"x"), {}),
            # The block write times out, then the abort and the temp removal: 3 timeouts.
            "write_data_stream": lambda: storage.write_data_stream(stream, stream.get_digest, {}),
            "read_data": lambda: storage.read_data(pointer),  # type: ignore[arg-type]
            "read_data_stream": lambda: consume(storage.read_data_stream(pointer)),  # type: ignore[arg-type]
        }
        for operation, call in operations.items():
            started = time.monotonic()
            with pytest.raises(StorageUnavailableError) as caught:
                await call()
            elapsed = time.monotonic() - started
            limit = (3 if operation == "write_data_stream" else 1) * timeout + 1.0
            assert elapsed < limit, f"{operation} took {elapsed:.1f} s"
            message = str(caught.value)
            assert message.startswith(f"{operation} {backend.protocol}://{root}/")
            assert "0.3 s timeout" in message
            assert isinstance(caught.value.__cause__, TimeoutError)


@pytest.mark.backends(*SERVERS)
async def test_cancelling_a_write_stuck_on_a_silent_server_returns(backend: BackendInfo) -> None:
    timeout = 0.3
    with black_hole() as endpoint:
        storage = await silent_storage(backend, endpoint, timeout)

        async def endless() -> AsyncIterator[bytes]:
            while True:
                yield payload(BLOCK)

        stream = Stream([])
        started = time.monotonic()
        with anyio.move_on_after(0.1) as scope:
            await storage.write_data_stream(endless(), stream.get_digest, {})
        assert scope.cancelled_caught
        assert time.monotonic() - started < 3 * timeout + 1.0


# --- a server that dies mid-stream and comes back ------------------------------------------


@pytest.mark.backends(*SERVERS, "ftp", "sshfs")
async def test_server_killed_mid_stream_then_back(backend: BackendInfo, root_url: str) -> None:
    server = backend.server
    assert server is not None
    port = server.port
    timeout = 1.0
    storage = make(backend, root_url, timeout=timeout)
    block = block_size(backend)
    data = payload(block + 2 * BLOCK, seed=7)
    chunks = chunked(data, BLOCK)
    final = f"{digest_of(data)['content_hash'][:2]}/{digest_of(data)['content_hash']}.bin"

    async def kill_after_first_block(index: int) -> None:
        if index == block // BLOCK + 1:  # the first block is uploaded by now
            await asyncio.to_thread(server.stop)

    stream = HookedStream(chunks, kill_after_first_block)
    started = time.monotonic()
    try:
        with pytest.raises(StorageUnavailableError) as caught:
            await storage.write_data_stream(stream, stream.get_digest, {})
        elapsed = time.monotonic() - started
        assert elapsed < 3 * timeout + 5.0, f"the failed stream took {elapsed:.1f} s"
        message = str(caught.value)
        assert message.startswith(f"write_data_stream {backend.protocol}://")
        assert f"{backend.root}/" in message
        assert caught.value.__cause__ is not None
        if backend.name in (
            "s3",
            "seaweedfs",
            "ftp",
            "sftp",
        ):  # (once per kind: each costs a timeout)
            # While the server is down, other operations fail the same way, a read
            # never as a missing object.
            with pytest.raises(StorageUnavailableError, match=r"^write_data \w+://"):
                await storage.write_data(b"x", digest_of(b"x"), {})
            pointer = storage._pointer(final, digest_of(data))
            with pytest.raises(StorageUnavailableError, match=r"^read_data \w+://"):
                await storage.read_data(pointer)
    finally:
        server.start()
        if backend.name not in ("s3", "seaweedfs", "sftp"):  # these come back empty
            server.create_bucket()
    assert server.port == port
    if backend.name in ("ftp", "sftp", "sshfs"):
        # The temp file stayed on the stopped server's disk, out of the failed discard's
        # reach: a crash leftover, which cleanup_temp finds and removes.
        [left] = objects(backend, root_url)
        assert left.startswith(".lakery-tmp/")
        assert await storage.cleanup_temp(older_than=0) == [f"{storage.location.root}/{left}"]
    elif backend.name == "webdav":
        # wsgidav keeps what arrived of a PUT cut off: a temp object, which the failed
        # stream could not delete while the server was down. cleanup_temp removes it.
        leftovers = objects(backend, root_url)
        assert all(path.startswith(".lakery-tmp/") for path in leftovers), leftovers
        await storage.cleanup_temp(older_than=0)
    # moto and SeaweedFS kept their data: nothing was committed at the final path or left
    # at a temp one.
    assert objects(backend, root_url) == []
    # The same write succeeds now.
    retry = Stream(chunks)
    pointer = await storage.write_data_stream(retry, retry.get_digest, {})
    assert pointer["path"] == final
    assert await storage.read_data(pointer) == data
    assert objects(backend, root_url) == [final]


# --- the caller's failures and cancellations ------------------------------------------------


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_stream_that_raises_midway_propagates_unchanged(
    backend: BackendInfo,
    root_url: str,
    timeout: float | None,  # noqa: ASYNC109
) -> None:
    storage = make(backend, root_url, timeout=timeout)
    blocks = block_size(backend) // BLOCK
    stream = Stream(chunked(payload(3 * block_size(backend)), BLOCK), fail_after=blocks + 1)
    with pytest.raises(StreamBroke) as caught:
        await storage.write_data_stream(stream, stream.get_digest, {})
    assert type(caught.value) is StreamBroke
    assert caught.value.__cause__ is None
    assert objects(backend, root_url) == []
    assert pending_uploads(backend, root_url) == []


class DigestBroke(Exception):
    pass


@pytest.mark.parametrize("timeout", [None, 5.0])
async def test_get_digest_that_raises_propagates_unchanged(
    backend: BackendInfo,
    root_url: str,
    timeout: float | None,  # noqa: ASYNC109
) -> None:
    storage = make(backend, root_url, timeout=timeout)
    stream = Stream(chunked(payload(2 * BLOCK + 1), BLOCK))
    raised = DigestBroke("digest broke")

    def broken_digest(*, allow_incomplete: bool = False) -> Any:
        if allow_incomplete:
            return stream.get_digest(allow_incomplete=True)
        raise raised

    with pytest.raises(DigestBroke) as caught:
        await storage.write_data_stream(stream, broken_digest, {})
    assert caught.value is raised
    assert objects(backend, root_url) == []
    assert pending_uploads(backend, root_url) == []


@pytest.mark.parametrize("how", ["asyncio", "anyio"])
async def test_cancelled_mid_stream_leaves_nothing(
    backend: BackendInfo, root_url: str, how: str
) -> None:
    storage = make(backend, root_url, timeout=5.0)
    uploaded = asyncio.Event()
    block = block_size(backend)

    async def endless() -> AsyncIterator[bytes]:
        sent = 0
        while True:
            yield payload(BLOCK, seed=sent)
            sent += BLOCK
            if sent > block:  # at least one block went to the backend
                uploaded.set()
            await asyncio.sleep(0)

    stream = Stream([])
    if how == "asyncio":
        task = asyncio.create_task(storage.write_data_stream(endless(), stream.get_digest, {}))
        await uploaded.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    else:
        async with anyio.create_task_group() as group:

            async def write() -> None:
                await storage.write_data_stream(endless(), stream.get_digest, {})

            group.start_soon(write)
            await uploaded.wait()
            group.cancel_scope.cancel()
    assert objects(backend, root_url) == []
    assert pending_uploads(backend, root_url) == []


# --- units: classification, the serialized writer, the option -------------------------------


def transient_examples() -> list[BaseException]:
    """Errors every client's calls recognise as "unavailable" (transport errors of the
    clouds' own SDKs are their specs', see test_client_errors_are_their_specs)."""
    import aiohttp
    from azure.core.exceptions import HttpResponseError
    from gcsfs.retry import HttpError

    refused = ConnectionRefusedError(111, "Connect call failed")
    chained = RuntimeError("Failed to upload block")
    chained.__cause__ = refused
    server_error = HttpResponseError(message="busy")
    server_error.status_code = 503
    return [
        refused,
        TimeoutError(),
        aiohttp.ServerDisconnectedError(),
        server_error,
        HttpError({"code": 503, "message": "unavailable"}),
        HttpError({"code": 429, "message": "slow down"}),
        OSError(121, "InternalError"),  # s3fs: EREMOTEIO
        chained,
    ]


def permanent_examples() -> list[BaseException]:
    from azure.core.exceptions import HttpResponseError
    from gcsfs.retry import HttpError

    forbidden = HttpResponseError(message="no")
    forbidden.status_code = 403
    return [
        FileNotFoundError("x"),
        FileExistsError("x"),
        PermissionError("denied"),
        ValueError("bad"),
        KeyError("k"),
        forbidden,
        HttpError({"code": 400, "message": "bad request"}),
    ]


def test_transient_errors_are_recognised() -> None:
    for error in transient_examples():
        assert unavailable(error) is not None, repr(error)  # type: ignore[arg-type]
    for error in permanent_examples():
        assert unavailable(error) is None, repr(error)  # type: ignore[arg-type]


def test_client_errors_are_their_specs() -> None:
    import botocore.exceptions
    from azure.core.exceptions import ServiceRequestError

    from lakery_fsspec._backends.azure import Azure
    from lakery_fsspec._backends.s3 import S3

    for spec, error in [
        (S3, botocore.exceptions.EndpointConnectionError(endpoint_url="http://x")),
        (S3, botocore.exceptions.ReadTimeoutError(endpoint_url="http://x")),
        (Azure, ServiceRequestError("cannot connect")),
    ]:
        assert unavailable(error, spec.transient) is not None, repr(error)
        assert unavailable(error) is None, repr(error)  # another client's class of that name


def test_unavailable_error_names_operation_and_url() -> None:
    error = unavailable(ConnectionRefusedError(111, "refused"))
    assert error is not None
    assert str(error) == "ConnectionRefusedError: [Errno 111] refused"
    error.locate("read_data", "s3://bucket/lake/ab/cd")
    error.locate("other", "s3://elsewhere")  # the first location wins
    assert (
        str(error)
        == "read_data s3://bucket/lake/ab/cd failed: ConnectionRefusedError: [Errno 111] refused"
    )
    assert isinstance(error, OSError)
    assert str(unavailable(TimeoutError())) == "TimeoutError"


def test_serial_writer_aborts_only_after_the_write_in_flight() -> None:
    events: list[str] = []
    release = threading.Event()

    class SlowWriter:
        def write(self, data: bytes, /) -> None:
            events.append("write started")
            release.wait(5)
            events.append("write done")

        def commit(self) -> None:
            events.append("commit")

        def abort(self) -> None:
            events.append("abort")

    writer = SerialWriter(SlowWriter)
    writer.open()
    stuck = threading.Thread(target=writer.write, args=(b"x",))
    stuck.start()
    while not events:
        time.sleep(0.01)
    aborting = threading.Thread(target=writer.abort)
    aborting.start()
    aborting.join(0.3)
    assert aborting.is_alive()  # waiting for the write
    assert events == ["write started"]
    release.set()
    stuck.join()
    aborting.join()
    assert events == ["write started", "write done", "abort"]
    with pytest.raises(RuntimeError, match="aborted"):
        writer.write(b"late")


def test_serial_writer_aborted_before_it_opened_never_opens() -> None:
    opened: list[bool] = []
    writer = SerialWriter(lambda: opened.append(True))  # type: ignore[arg-type,return-value]
    writer.abort()
    writer.open()
    assert opened == []


@pytest.mark.parametrize("timeout", [0, -1, True, "5", float("nan")])
def test_bad_timeouts_are_refused(timeout: object) -> None:
    with pytest.raises(ValueError, match="timeout must be a positive number"):
        FsspecStorage("memory://t", timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.backends("local")  # memory calls never block: they run on the caller's loop
async def test_blocking_call_past_the_timeout(
    backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make(backend, root_url, timeout=0.3)
    pointer = await storage.write_data(b"data", digest_of(b"data"), {})
    fs = storage.location.filesystems()[0]
    original = fs.cat_file

    def slow_cat_file(*args: Any, **kwargs: Any) -> Any:
        time.sleep(1.0)
        return original(*args, **kwargs)

    monkeypatch.setattr(fs, "cat_file", slow_cat_file)
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match=r"^read_data \w+://.*0\.3 s timeout"):
        await storage.read_data(pointer)
    assert time.monotonic() - started < 0.9
    monkeypatch.undo()
    assert await storage.read_data(pointer) == b"data"
    missing = {**pointer, "path": "ab/missing"}
    with pytest.raises(NoStorageData):
        await storage.read_data(missing)  # type: ignore[arg-type]


async def consume(chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass
