"""FTP on a real pyftpdlib server: credentials in URLs, `lakery-fsspec check` on every way a
connection fails, reads that must not share ftplib's one control connection, and a storage
that outlives its server's restart."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload
from servers import HOST, free_port
from servers_ftp import PASSWORD, READER, USER

from lakery_fsspec import FsspecStorage, StorageUnavailableError
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("ftp")

SMALL = ["--size", "256KiB"]


def url_with(
    backend: BackendInfo, user: str = USER, password: str = PASSWORD, port: int = 0
) -> str:
    """A fresh root URL naming user, password, host and port itself."""
    assert backend.server is not None
    port = port or backend.server.port
    return f"ftp://{user}:{password}@{HOST}:{port}/{backend.root}/{uuid.uuid4().hex}"


def test_check_with_credentials_in_the_url_never_prints_the_password(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = url_with(backend)
    assert main(["check", url, *SMALL]) == 0
    out, err = capsys.readouterr()
    assert f"OK: {url.replace(PASSWORD, '***')} works" in out
    assert PASSWORD not in out + err


def test_check_explains_a_wrong_password(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    wrong = "not-the-password-9c1d"
    assert main(["check", url_with(backend, password=wrong), *SMALL]) == 1
    out, err = capsys.readouterr()
    assert "FAILED at step 'storage'" in err
    assert "The FTP server refused the login (530" in err
    assert "the user name or password is wrong" in err
    assert "ftp://USER:PASSWORD@HOST:PORT/folder" in err  # the fix
    assert wrong not in out + err


def test_check_explains_connection_refused(capsys: pytest.CaptureFixture[str]) -> None:
    url = f"ftp://{USER}:{PASSWORD}@{HOST}:{free_port()}/bucket/lake"
    assert main(["check", url, *SMALL]) == 1
    out, err = capsys.readouterr()
    assert "FAILED at step 'storage'" in err
    assert "Cannot connect to the FTP server: connection refused" in err
    assert "that the FTP server is running" in err
    assert PASSWORD not in out + err


def test_check_explains_a_missing_folder(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    # The reader may not make folders: the storage's folder cannot come into being.
    url = url_with(backend, user=READER) + "/deeper"
    assert main(["check", url, *SMALL]) == 1
    _, err = capsys.readouterr()
    assert "FAILED at step 'write blob'" in err
    assert "/deeper/.lakery-tmp does not exist on the FTP server" in err
    assert "and this user cannot make it" in err
    assert "Create the folder on the server" in err


def test_check_explains_permission_denied(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    assert backend.server is not None
    backend.server.put("readonly/.lakery-tmp/keep", b"")  # the folders exist
    url = f"ftp://{READER}:{PASSWORD}@{HOST}:{backend.server.port}/{backend.root}/readonly"
    assert main(["check", url, *SMALL]) == 1
    _, err = capsys.readouterr()
    assert "FAILED at step 'write blob'" in err
    assert "The FTP server refused to let this user write (550" in err
    assert "Give the FTP user permission to store, rename and delete files" in err


async def test_url_credentials_work_and_stay_out_of_pointers(backend: BackendInfo) -> None:
    url = url_with(backend)
    storage = FsspecStorage(url)  # no options: user, password, host and port from the URL
    pointer = await storage.write_data(b"abc", digest_of(b"abc"), {})
    assert await storage.read_data(pointer) == b"abc"
    assert PASSWORD not in str(pointer) + repr(storage)
    assert pointer["root"] == f"/{backend.root}/{url.rsplit('/', 1)[1]}"


async def test_concurrent_streams_read_exact_bytes(backend: BackendInfo, root_url: str) -> None:
    # Each stream read runs several ranged transfers, one ahead: on a shared control
    # connection they broke it ("error_reply: 200 Type set to: Binary.").
    storage = FsspecStorage(root_url, storage_options=backend.storage_options, chunk_size=2**20)
    data = payload(20 * 2**20 + 3, seed=5)
    stream = Stream(chunked(data, 2**20))
    pointer = await storage.write_data_stream(stream, stream.get_digest, {})

    async def read() -> bytes:
        return b"".join([chunk async for chunk in storage.read_data_stream(pointer)])

    results = await asyncio.gather(*(read() for _ in range(8)), storage.read_data(pointer))
    assert all(result == data for result in results)


async def test_storage_works_again_after_a_restart(backend: BackendInfo, root_url: str) -> None:
    server = backend.server
    assert server is not None
    storage = FsspecStorage(root_url, storage_options=backend.storage_options, timeout=5)
    blobs = [payload(1000, seed=i) for i in range(8)]
    await asyncio.gather(*(storage.write_data(b, digest_of(b), {}) for b in blobs))  # a full pool
    server.stop()
    try:
        with pytest.raises(StorageUnavailableError, match=r"^write_data ftp:///"):
            await storage.write_data(b"down", digest_of(b"down"), {})
    finally:
        server.start()
    # Every pooled connection died with the server; new ones are made, no call fails.
    pointers = await asyncio.gather(*(storage.write_data(b, digest_of(b), {}) for b in blobs))
    assert [await storage.read_data(p) for p in pointers] == blobs


async def test_cached_read_after_a_restart_is_unavailable_never_missing(
    backend: BackendInfo, root_url: str, tmp_path: Path
) -> None:
    # simplecache reads through fsspec's own FTP filesystem, whose one control connection
    # dies with the server: "not found" must mean that the server said so.
    server = backend.server
    assert server is not None
    cache = {"simplecache": {"cache_storage": str(tmp_path / "cache")}}
    options = {**backend.storage_options, **cache}
    storage = FsspecStorage(f"simplecache::{root_url}", storage_options=options, timeout=5)
    first, second = payload(1000, seed=1), payload(1000, seed=2)
    pointers = [await storage.write_data(b, digest_of(b), {}) for b in (first, second)]
    assert await storage.read_data(pointers[0]) == first  # the cache's connection is open
    server.stop()
    server.start()
    with pytest.raises(StorageUnavailableError, match=r"^read_data ftp:///") as caught:
        await storage.read_data(pointers[1])  # on the server's disk, not in the cache
    assert caught.value.__cause__ is not None  # the dead connection's own error
    # (fsspec's FTP filesystem keeps its dead connection, in its instance cache too: the
    # object is read again by a filesystem made anew, not asserted here.)
