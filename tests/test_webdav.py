"""WebDAV specifics, on the wsgidav server: URLs and schemes, requests per object, race-free
dedup, streams sent as they come, nothing sent after an abort, and `check`'s diagnoses.

The contract itself (round trips, atomic visibility, faults, clean-up, secrets) runs on
WebDAV through the shared suite (`--backends=webdav`).
"""

from __future__ import annotations

import asyncio
import gc
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, StreamBroke, chunked, digest_of, payload
from servers import HOST, free_port
from servers_webdav import PASSWORD, USER, WebdavServer

from lakery_fsspec import FsspecStorage
from lakery_fsspec._location import Location
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("webdav")

BLOCK = 256 * 1024


def server_of(backend: BackendInfo) -> WebdavServer:
    assert isinstance(backend.server, WebdavServer)
    return backend.server


def folder() -> str:
    return f"{WebdavServer.bucket}/{uuid.uuid4().hex}"


def make(backend: BackendInfo, **options: Any) -> FsspecStorage:
    """A storage on a fresh folder, with a filesystem of its own (``options`` differ)."""
    merged = {**backend.storage_options, "headers": {"X-Test": uuid.uuid4().hex}, **options}
    return FsspecStorage(f"webdav://{folder()}", storage_options=merged, chunk_size=BLOCK)


@contextmanager
def requests_of(storage: FsspecStorage) -> Iterator[list[str]]:
    """The requests the storage's filesystem sends meanwhile, as ``METHOD status``."""
    fs: Any = storage.location.filesystems()[1]
    sent: list[str] = []

    def record(response: Any) -> None:
        ranged = " ranged" if "Range" in response.request.headers else ""
        sent.append(f"{response.request.method}{ranged} {response.status_code}")

    hooks = fs.client.http.event_hooks
    fs.client.http.event_hooks = {**hooks, "response": [*hooks["response"], record]}
    try:
        yield sent
    finally:
        fs.client.http.event_hooks = hooks


# --- URLs -------------------------------------------------------------------------------


def test_a_url_naming_the_server_and_base_url_give_one_root(backend: BackendInfo) -> None:
    server = server_of(backend)
    named = Location(f"webdav://{server.host_port}/.bucket/lake", {"auth": (USER, PASSWORD)})
    relative = Location("webdav://.bucket/lake", backend.storage_options)
    assert named.root == relative.root == ".bucket/lake"
    assert named.protocol == relative.protocol == "webdav"
    assert named._options["base_url"] == server.endpoint  # pyright: ignore[reportPrivateUsage]
    dav = Location(f"dav://{server.host_port}/.bucket/lake", {})
    assert (dav.protocol, dav.root) == ("webdav", ".bucket/lake")
    secure = Location("davs://dav.example.com/files/lake", {})
    assert secure._options == {"base_url": "https://dav.example.com"}  # pyright: ignore[reportPrivateUsage]
    assert secure.root == "files/lake"


def test_a_url_without_a_server_is_refused() -> None:
    with pytest.raises(ValueError, match=r"names no server.*base_url"):
        FsspecStorage("webdav:///lake")


async def test_credentials_in_the_url_work_and_never_show(backend: BackendInfo) -> None:
    server = server_of(backend)
    url = f"webdav://{USER}:{PASSWORD}@{server.host_port}/{folder()}"
    storage = FsspecStorage(url)
    pointer = await storage.write_data(b"hello", digest_of(b"hello"), {})
    assert await storage.read_data(pointer) == b"hello"
    assert PASSWORD not in repr(storage) + str(pointer) + storage.serialize_config(pointer)
    # The same object through the base_url spelling: the pointer does not depend on it.
    other = FsspecStorage("webdav://.bucket/elsewhere", storage_options=backend.storage_options)
    assert await other.read_data(pointer) == b"hello"


async def test_auth_given_as_a_list_works(backend: BackendInfo) -> None:
    storage = make(backend, auth=[USER, PASSWORD])  # as -o auth='["user", "pw"]' gives it
    pointer = await storage.write_data(b"x", digest_of(b"x"), {})
    assert await storage.read_data(pointer) == b"x"


# --- requests per object ----------------------------------------------------------------


async def test_a_blob_costs_a_put_and_a_move(backend: BackendInfo) -> None:
    storage = make(backend)
    with requests_of(storage) as first:
        await storage.write_data(b"first", digest_of(b"first"), {})
    # The temp folder once per process (and here its parent, the new root), the final
    # folder when a MOVE says it is missing.
    assert first == [
        *("MKCOL 409", "MKCOL 201", "MKCOL 201", "PUT 201"),
        *("MOVE 409", "MKCOL 201", "MOVE 201"),
    ]
    data = payload(1024, seed=3)
    with requests_of(storage) as sent:
        await storage.write_data(data, digest_of(data), {})
    assert sent[0] == "PUT 201"
    assert sent[-1] == "MOVE 201"
    with requests_of(storage) as again:
        pointer = await storage.write_data(data, digest_of(data), {})
    # Already stored; the HEAD tells it from a damaged object (of another size); gc's
    # freshness marker (its folder made the first time).
    assert again == ["PUT 201", "MOVE 412", "DELETE 204", "HEAD 200", "MKCOL 201", "PUT 201"]
    with requests_of(storage) as read:
        assert await storage.read_data(pointer) == data
    assert read == ["GET 200"]


async def test_stream_reads_are_ranged_gets(backend: BackendInfo) -> None:
    storage = make(backend)
    data = payload(9 * 2**20 + 5, seed=4)
    pointer = await storage.write_data(data, digest_of(data), {})
    with requests_of(storage) as sent:
        chunks = [chunk async for chunk in storage.read_data_stream(pointer)]
    assert b"".join(chunks) == data
    assert max(map(len, chunks)) == BLOCK
    assert sent == ["HEAD 200", "GET ranged 206", "GET ranged 206", "GET ranged 206"]


async def test_concurrent_identical_writes_all_succeed(backend: BackendInfo) -> None:
    storage = make(backend)
    data = payload(100_000, seed=5)

    async def write_stream() -> Any:
        stream = Stream(chunked(data, 30_000))
        return await storage.write_data_stream(stream, stream.get_digest, {})

    writes = [storage.write_data(data, digest_of(data), {}) for _ in range(32)]
    writes += [write_stream() for _ in range(8)]
    pointers = await asyncio.gather(*writes)
    assert len({str(pointer) for pointer in pointers}) == 1
    root = storage.location.root.split("/", 1)[1]
    stored = [path for path in server_of(backend).files(root) if "/.lakery-fresh/" not in path]
    assert stored == [f"{root}/{pointers[0]['path']}"]


# --- streams ----------------------------------------------------------------------------


async def test_a_stream_is_sent_as_it_comes(backend: BackendInfo) -> None:
    """Each block reaches the server's temp file before the stream yields the next-but-one:
    nothing is spooled locally until the end."""
    storage = make(backend)
    temp_folder = server_of(backend).data / storage.location.root / ".lakery-tmp"

    def on_server() -> int:
        return sum(entry.stat().st_size for entry in os.scandir(temp_folder))

    async def stream() -> AsyncIterator[bytes]:
        for index in range(6):
            if index >= 2:  # the block before the previous one has arrived
                deadline = time.monotonic() + 10
                while on_server() < (index - 1) * BLOCK:
                    assert time.monotonic() < deadline, f"block {index - 2} never arrived"
                    await asyncio.sleep(0.01)
            yield payload(BLOCK, seed=index)

    whole = b"".join(payload(BLOCK, seed=index) for index in range(6))
    pointer = await storage.write_data_stream(stream(), lambda **_: digest_of(whole), {})
    assert await storage.read_data(pointer) == whole


async def test_a_failed_stream_sends_nothing_more(backend: BackendInfo) -> None:
    storage = make(backend)
    stream = Stream(chunked(payload(4 * BLOCK), BLOCK), fail_after=2)
    with requests_of(storage) as sent, pytest.raises(StreamBroke):
        await storage.write_data_stream(stream, stream.get_digest, {})
    gc.collect()  # an abandoned writer must not upload itself when collected
    await asyncio.sleep(0.3)
    root = storage.location.root.split("/", 1)[1]
    assert server_of(backend).files(root) == []
    assert sent.count("DELETE 204") + sent.count("DELETE 404") >= 1
    assert not any(request.startswith(("MOVE", "PUT 2")) for request in sent), sent


# --- lakery-fsspec check ----------------------------------------------------------------


def cli_options(options: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for key, value in options.items():
        shown = value if isinstance(value, str) else str(list(value)).replace("'", '"')
        args += ["-o", f"{key}={shown}"]
    return args


def check(url: str, options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(["check", url, *cli_options(options), "--size", "256KiB", "--timeout", "5"])
    captured = capsys.readouterr()
    text = captured.out + captured.err
    assert PASSWORD not in text
    assert "Traceback" not in text
    assert code == (0 if "OK: " in captured.out else 1)
    return text


def test_check_passes_with_credentials_in_the_url(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"webdav://{USER}:{PASSWORD}@{server_of(backend).host_port}/{folder()}"
    text = check(url, {}, capsys)
    assert "OK: webdav://lakery:***@127.0.0.1:" in text


def test_check_connection_refused(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    dead = f"{HOST}:{free_port()}"
    # The server named in the URL or in base_url: either way check probes it first.
    for url, options in [
        (f"webdav://{dead}/.bucket/lake", {"auth": (USER, PASSWORD)}),
        ("webdav://.bucket/lake", {"base_url": f"http://{dead}"}),
    ]:
        text = check(url, options, capsys)
        assert "FAILED at step 'endpoint'" in text
        assert f"Cannot connect to http://{dead}: connection refused" in text
        assert "fix: Check the endpoint URL and that the server is running" in text


def test_check_bad_password(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    wrong = {**backend.storage_options, "auth": (USER, "not-the-password")}
    text = check(f"webdav://{folder()}", wrong, capsys)
    assert "FAILED at step 'list'" in text
    assert "rejected the user name or password (401 Unauthorized)" in text
    assert "fix: Give the user and password" in text
    assert "not-the-password" not in text


def test_check_missing_top_folder(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    top = f"missing-{uuid.uuid4().hex[:8]}"
    text = check(f"webdav://{top}/lake", backend.storage_options, capsys)
    assert "FAILED at step 'list'" in text
    assert f"The folder '{top}' does not exist on the WebDAV server at http://127.0.0.1:" in text
    assert f"fix: Create the folder '{top}' on the server" in text
    assert not (server_of(backend).data / top).exists()  # never created


def test_check_permission_denied(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    text = check(f"webdav://{folder()}", server_of(backend).reader_options, capsys)
    assert "FAILED at step 'write blob'" in text
    assert "403 Forbidden" in text
    assert "read-only for this user" in text
    assert "fix: Use a folder this user may write to" in text


async def test_credentials_in_base_url_work_for_moves(backend: BackendInfo) -> None:
    # httpx takes the user and password from the URL; a MOVE's Destination must not
    # carry them (wsgidav then answers 502 Bad Gateway: another server).
    server = server_of(backend)
    base_url = f"http://{USER}:{PASSWORD}@{server.host_port}"
    storage = FsspecStorage(
        f"webdav://{folder()}", storage_options={"base_url": base_url}, chunk_size=BLOCK
    )
    data = payload(3 * BLOCK + 5)
    stream = Stream(chunked(data, BLOCK))
    pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    blob = await storage.write_data(b"blob", digest_of(b"blob"), {})
    assert await storage.read_data(pointer) == data
    assert await storage.read_data(blob) == b"blob"
    assert await storage.list_temp() == []
