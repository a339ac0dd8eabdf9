"""SFTP through fsspec's paramiko client: what only SFTP has (credentials in the URL, host
keys, one SSH connection shared by concurrent calls, create-only renames, reconnecting
after a restart, a server that never answers) and what `lakery-fsspec check` says."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import anyio
import paramiko
import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload
from servers_sftp import PASSWORD, READER, USER, SFTPServer

from lakery_fsspec import FsspecStorage, StorageUnavailableError
from lakery_fsspec._backends.sftp import UnknownHostKeyError
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("sftp")

SMALL = ["--size", "256KiB"]


def server_of(backend: BackendInfo) -> SFTPServer:
    assert isinstance(backend.server, SFTPServer)
    return backend.server


def known_hosts(backend: BackendInfo) -> dict[str, Any]:
    return {"known_hosts": str(server_of(backend).known_hosts)}


def without(options: dict[str, Any], *names: str) -> dict[str, Any]:
    return {key: value for key, value in options.items() if key not in names}


# --- URLs, schemes, host keys -------------------------------------------------------------


def with_password(backend: BackendInfo) -> str:
    return backend.new_url().replace(f"{USER}@", f"{USER}:{PASSWORD}@", 1)


async def test_url_credentials_are_used_and_never_shown(backend: BackendInfo) -> None:
    url = with_password(backend)
    storage = FsspecStorage(url, storage_options=known_hosts(backend))  # host, user, password
    pointer = await storage.write_data(b"abc", digest_of(b"abc"), {})
    assert await storage.read_data(pointer) == b"abc"
    assert pointer["protocol"] == "sftp"
    for text in (json.dumps(pointer), repr(storage), str(storage)):
        assert PASSWORD not in text


def test_check_with_url_credentials_hides_the_password(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    url = with_password(backend)
    assert main(["check", url, "-o", f"known_hosts={server_of(backend).known_hosts}", *SMALL]) == 0
    captured = capsys.readouterr()
    assert PASSWORD not in captured.out + captured.err
    assert f"{USER}:***@" in captured.out


async def test_ssh_urls_record_sftp(backend: BackendInfo) -> None:
    written = FsspecStorage(backend.new_url("ssh"), storage_options=backend.storage_options)
    pointer = await written.write_data(b"via ssh", digest_of(b"via ssh"), {})
    assert pointer["protocol"] == "sftp"
    reader = FsspecStorage(backend.new_url("sftp"), storage_options=backend.storage_options)
    assert await reader.read_data(pointer) == b"via ssh"


async def test_unknown_host_key_is_refused_with_the_fix(
    backend: BackendInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.ssh/known_hosts
    options = without(backend.storage_options, "known_hosts")
    storage = FsspecStorage(backend.new_url(), storage_options=options)
    with pytest.raises(UnknownHostKeyError) as caught:
        await storage.write_data(b"x", digest_of(b"x"), {})
    message = str(caught.value)
    port = server_of(backend).port
    assert f"[127.0.0.1]:{port} presented a host key (ssh-ed25519 SHA256:" in message
    assert f"ssh-keyscan -p {port} 127.0.0.1 >> ~/.ssh/known_hosts" in message
    assert "known_hosts=PATH" in message
    assert PASSWORD not in message
    # The user's own known_hosts counts, as for OpenSSH.
    (tmp_path / ".ssh").mkdir()
    shutil.copy(server_of(backend).known_hosts, tmp_path / ".ssh" / "known_hosts")
    pointer = await storage.write_data(b"x", digest_of(b"x"), {})
    assert await storage.read_data(pointer) == b"x"


async def test_accepting_any_host_key_is_an_explicit_choice(
    backend: BackendInfo, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    options = {**without(backend.storage_options, "known_hosts"), "host_key_policy": "auto_add"}
    storage = FsspecStorage(backend.new_url(), storage_options=options)
    pointer = await storage.write_data(b"any", digest_of(b"any"), {})
    assert await storage.read_data(pointer) == b"any"
    both = FsspecStorage(backend.new_url(), storage_options={**options, **known_hosts(backend)})
    with pytest.raises(ValueError, match="either known_hosts= or host_key_policy="):
        await both.write_data(b"any", digest_of(b"any"), {})


async def test_changed_host_key_is_refused(backend: BackendInfo, tmp_path: Path) -> None:
    import asyncssh

    other = asyncssh.generate_private_key("ssh-ed25519").export_public_key("openssh")
    wrong = tmp_path / "known_hosts"
    wrong.write_text(f"[127.0.0.1]:{server_of(backend).port} {other.decode().strip()}\n")
    options = {**backend.storage_options, "known_hosts": str(wrong)}
    storage = FsspecStorage(backend.new_url(), storage_options=options)
    with pytest.raises(paramiko.BadHostKeyException):
        await storage.write_data(b"x", digest_of(b"x"), {})


# --- one connection, many calls -----------------------------------------------------------


class BarrierStream(Stream):
    """A Stream that, after its last chunk, waits until every writer got there."""

    def __init__(self, chunks: list[bytes], barrier: asyncio.Barrier) -> None:
        super().__init__(chunks)
        self._barrier = barrier

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for chunk in super().__aiter__():
            yield chunk
        await self._barrier.wait()


async def test_identical_writers_race_and_exactly_one_move_wins(
    backend: BackendInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lakery_fsspec")
    storage = FsspecStorage(
        backend.new_url(), storage_options=backend.storage_options, chunk_size=2**16
    )
    data = payload(5 * 2**16 + 3, seed=5)
    barrier = asyncio.Barrier(8)  # every upload done before any move
    streams = [BarrierStream(chunked(data, 2**15), barrier) for _ in range(8)]
    pointers = await asyncio.gather(
        *(storage.write_data_stream(s, s.get_digest, {}) for s in streams)
    )
    assert all(pointer == pointers[0] for pointer in pointers)
    messages = [record.getMessage() for record in caplog.records]
    moved = [m for m in messages if m.startswith("write_data_stream sftp://")]
    refused = [m for m in messages if m.startswith("write_data_stream (exists) sftp://")]
    assert (len(moved), len(refused)) == (1, 7)
    assert await storage.read_data(pointers[0]) == data
    fs = backend.fs()
    found = [path for path in fs.find(storage.location.root) if "/.lakery-fresh/" not in path]
    assert found == [f"{pointers[0]['root']}/{pointers[0]['path']}"]


async def test_many_calls_at_once_on_one_connection(backend: BackendInfo) -> None:
    storage = FsspecStorage(
        backend.new_url(), storage_options=backend.storage_options, chunk_size=2**15
    )
    contents = [payload(3 * 2**15 + i, seed=i) for i in range(24)]
    streams = [Stream(chunked(data, 2**14)) for data in contents]
    blobs = [storage.write_data(data, digest_of(data), {}) for data in contents]
    pointers = await asyncio.gather(
        *blobs, *(storage.write_data_stream(s, s.get_digest, {}) for s in streams)
    )

    async def read(pointer: Any) -> bytes:
        return b"".join([chunk async for chunk in storage.read_data_stream(pointer)])

    read_back = await asyncio.gather(*(read(p) for p in pointers))
    assert read_back == contents + contents
    channels = storage._backends_for("sftp").target.channels  # type: ignore[attr-defined]
    assert 1 < channels._open <= channels._limit  # pooled, and bounded


async def test_server_restart_then_same_and_new_storages_work(backend: BackendInfo) -> None:
    url = backend.new_url()
    storage = FsspecStorage(url, storage_options=backend.storage_options)
    pointer = await storage.write_data(b"before", digest_of(b"before"), {})
    server = server_of(backend)
    server.stop()
    server.start()
    assert await storage.read_data(pointer) == b"before"
    again = FsspecStorage(url, storage_options=backend.storage_options)
    after = await again.write_data(b"after", digest_of(b"after"), {})
    assert await storage.read_data(after) == b"after"


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port where connections are accepted (into the backlog) and never answered."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(128)
        yield silent.getsockname()[1]


async def test_a_server_that_never_answers_starves_no_other_storage(
    backend: BackendInfo, tmp_path: Path
) -> None:
    with silent_port() as port:
        options = {**backend.storage_options, "port": port}
        stuck_storage = FsspecStorage(
            f"sftp://{USER}@127.0.0.1:{port}/lake", storage_options=options
        )
        stuck = [
            asyncio.create_task(stuck_storage.write_data(b"%d" % i, digest_of(b"%d" % i), {}))
            for i in range(60)
        ]
        await asyncio.sleep(0.2)
        local = FsspecStorage(tmp_path / "lake")
        with anyio.fail_after(20):
            for i in range(50):
                data = payload(1000, seed=i)
                pointer = await local.write_data(data, digest_of(data), {})
                assert await local.read_data(pointer) == data
        assert not any(task.done() for task in stuck)
        for task in stuck:
            task.cancel()
        await asyncio.gather(*stuck, return_exceptions=True)


async def test_verify_reaches_a_pointers_server_off_the_loop(
    backend: BackendInfo, tmp_path: Path
) -> None:
    with silent_port() as port:
        options = {**backend.storage_options, "port": port}
        local = FsspecStorage(tmp_path / "lake", read_options={"sftp": options}, timeout=1.0)
        pointer: Any = {"protocol": "sftp", "root": "lake", "path": "ab/ab12.bin"}
        ticks = 0

        async def tick() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.05)
                ticks += 1

        ticker = asyncio.create_task(tick())
        try:
            with anyio.fail_after(20), pytest.raises(StorageUnavailableError):
                await local.verify([pointer])
        finally:
            ticker.cancel()
        assert ticks >= 10  # the loop ran on while the connect waited out the timeout


# --- check explains -----------------------------------------------------------------------


def check(url: str, options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    assert main(["check", url, *args, *SMALL, "--timeout", "5"]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert PASSWORD not in captured.out + captured.err
    return captured.err


def url_for(backend: BackendInfo, user: str, path: str) -> str:
    return f"sftp://{user}@127.0.0.1:{server_of(backend).port}/{path}"


def test_check_explains_connection_refused(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # nothing listens once closed
    err = check(f"sftp://{USER}@127.0.0.1:{port}/lake", known_hosts(backend), capsys)
    assert "Nothing accepts SSH connections there" in err
    assert "Check the host and port (sftp://user@host:port/path)" in err


def test_check_explains_a_wrong_password(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    options = {**known_hosts(backend), "password": "wrong"}
    err = check(url_for(backend, USER, f"{backend.root}/lake"), options, capsys)
    assert "The SFTP server refused the login" in err
    assert "Check the user name and password" in err


def test_check_explains_an_unknown_host_key(
    backend: BackendInfo,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    err = check(url_for(backend, USER, f"{backend.root}/lake"), {"password": PASSWORD}, capsys)
    assert "is in none of the known-hosts files" in err
    assert f"ssh-keyscan -p {server_of(backend).port} 127.0.0.1" in err


def test_check_makes_a_missing_folder(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing folder is no error on SFTP: it is made on the first write."""
    folder = f"{backend.root}/missing-{uuid.uuid4().hex[:8]}/lake"
    options = {**known_hosts(backend), "password": PASSWORD}
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    assert main(["check", url_for(backend, USER, folder), *args, *SMALL]) == 0
    assert "works for lakery-fsspec" in capsys.readouterr().out
    assert (server_of(backend).data / folder).is_dir()


def test_check_explains_permission_denied(
    backend: BackendInfo, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = f"readonly-{uuid.uuid4().hex[:8]}"
    server = server_of(backend)
    for sub in (".lakery-tmp", ".lakery-check"):
        (server.data / backend.root / folder / sub).mkdir(parents=True)
    options = {**known_hosts(backend), "password": PASSWORD}
    err = check(url_for(backend, READER, f"{backend.root}/{folder}"), options, capsys)
    assert "FAILED at step 'write blob'" in err
    assert "The SFTP server refused this user the operation (permission denied" in err
