"""A sync caller that runs every operation in its own event loop (``asyncio.run`` per
call, as Dask, Ray and Celery tasks and scripts do): it works, stays cheap (one S3 client
per process, shared credentials) and leaves nothing open behind."""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import os
import threading
import time
from typing import Any

import fsspec
import pytest
from conftest import BackendInfo
from helpers import payload, read, write

from lakery_fsspec import FsspecStorage

CLOUDS = ("s3", "gcs", "azure")


def _sockets() -> int:
    """Open sockets of this process (the in-process moto server's included)."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):  # the listing's own descriptor, closed since
            count += os.readlink(f"/proc/self/fd/{fd}").startswith("socket:")
    return count


def _settled_sockets(at_most: int | None = None, seconds: float = 10.0) -> int:
    """The socket count once it stops falling (a server closes its side of a closed
    connection a little later), or as soon as it is ``at_most``."""
    deadline = time.monotonic() + seconds
    count = _sockets()
    while time.monotonic() < deadline and (at_most is None or count > at_most):
        time.sleep(0.1)
        now = _sockets()
        if at_most is None and now == count:
            break
        count = now
    return count


def _write_read(storage: FsspecStorage, size: int) -> None:
    data = payload(size)

    async def main() -> None:
        assert await read(storage, await write(storage, data, "blob"), "blob") == data

    asyncio.run(main())


@pytest.mark.backends(*CLOUDS)
def test_twenty_new_loops_work_and_leave_no_socket_open(
    backend: BackendInfo, root_url: str
) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    _write_read(storage, 1000)  # the first loop makes what stays: clients, caches
    before = _settled_sockets()
    for size in range(1001, 1021):
        _write_read(storage, size)
    assert _settled_sockets(at_most=before) <= before


@pytest.mark.backends(*CLOUDS)
def test_new_loops_in_several_threads_at_once(backend: BackendInfo, root_url: str) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def worker(first: int) -> None:
        try:
            start.wait(timeout=30)
            for size in range(first, first + 5):
                _write_read(storage, size)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(2000 + 10 * i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []


def _clients(storage: FsspecStorage, loops: int) -> list[Any]:
    """The S3 client of the per-loop copy in each of ``loops`` new loops."""
    copies = storage._backends_for("s3")[1].io._loop_instances
    assert copies is not None
    data = payload(100)

    async def main() -> Any:
        assert await read(storage, await write(storage, data, "blob"), "blob") == data
        return (await copies.get())._s3

    return [asyncio.run(main()) for _ in range(loops)]


@pytest.mark.backends("s3")
def test_s3_new_loops_share_one_client_with_a_pool_per_loop(
    backend: BackendInfo, root_url: str
) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    clients = _clients(storage, 3)
    assert clients[0] is clients[1] is clients[2]
    pools = clients[0]._endpoint.http_session._pools
    assert pools == {}  # each loop's pool closed with its loop

    async def concurrently() -> None:
        await asyncio.gather(*(write(storage, payload(50 + i), "blob") for i in range(8)))
        assert len(pools) == 1

    asyncio.run(concurrently())
    assert pools == {}


@pytest.mark.backends("s3")
def test_s3_clients_are_shared_even_if_the_filesystem_connected_first(
    backend: BackendInfo, root_url: str
) -> None:
    # Options of this test's own: a filesystem instance nobody has used yet.
    options = {**backend.storage_options, "max_concurrency": 7}
    fsspec.filesystem("s3", **options).ls(backend.root)  # it makes a session of its own
    clients = _clients(FsspecStorage(root_url, storage_options=options), 2)
    assert clients[0] is clients[1]


@pytest.mark.backends("s3")
def test_s3_refreshable_credentials_give_each_loop_its_own_client(
    backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With an expiry, botocore's environment provider returns refreshable credentials,
    # which refresh under an asyncio lock: such a client must not cross loops.
    monkeypatch.setenv("AWS_CREDENTIAL_EXPIRATION", "2099-01-01T00:00:00Z")
    options = {"endpoint_url": backend.storage_options["endpoint_url"]}
    storage = FsspecStorage(root_url, storage_options=options)
    clients = _clients(storage, 3)
    assert len({id(client) for client in clients}) == 3
    assert all(client._endpoint.http_session._pools == {} for client in clients)


def _forked_write_read(storage: FsspecStorage) -> None:
    _write_read(storage, 3000)
    os._exit(0)


@pytest.mark.backends("s3")
def test_s3_a_forked_child_makes_its_own_client(backend: BackendInfo, root_url: str) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    parent_client = _clients(storage, 1)[0]
    child = multiprocessing.get_context("fork").Process(target=_forked_write_read, args=(storage,))
    child.start()
    child.join(timeout=60)
    if child.is_alive():
        child.kill()
        pytest.fail("the forked child did not finish its write and read within 60 s")
    assert child.exitcode == 0
    assert _clients(storage, 1)[0] is parent_client  # the parent's is still its own


@pytest.mark.backends("gcs")
def test_gcs_copies_use_the_filesystems_credentials(
    backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A raw token becomes credentials in each filesystem made with it (after a call to
    # Google's tokeninfo endpoint, skipped here): the copies must not make their own.
    monkeypatch.setenv("FETCH_RAW_TOKEN_EXPIRY", "false")
    options = {**backend.storage_options, "token": "raw-access-token"}
    storage = FsspecStorage(root_url, storage_options=options)
    backend_ = storage._backends_for("gcs")[1]
    copies = backend_.io._loop_instances
    assert copies is not None
    data = payload(100)

    async def main() -> Any:
        assert await read(storage, await write(storage, data, "blob"), "blob") == data
        return (await copies.get()).credentials.credentials

    first, second = asyncio.run(main()), asyncio.run(main())
    assert first is second is backend_.fs.credentials.credentials
