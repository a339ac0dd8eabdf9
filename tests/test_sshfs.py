"""SFTP through sshfs on the asyncssh server: what only this client needs pinned.

Host keys are checked (asyncssh's defaults, or the ``known_hosts`` option), the URL's
host, user and password are used, both spellings of the protocol read each other's
pointers, ranges are exact, a server restart is survived by the same and new storages,
and ``lakery-fsspec check`` explains each way a connection can fail.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload
from servers_sftp import PASSWORD, READER

from lakery_fsspec import FsspecStorage, StorageUnavailableError
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("sshfs")


def storage_at(backend: BackendInfo, url: str | None = None, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(
        url or backend.new_url(), storage_options=backend.storage_options, **kwargs
    )


async def test_a_stream_reads_back_exactly_its_bytes(backend: BackendInfo) -> None:
    storage = storage_at(backend, chunk_size=2**20)
    data = payload(20 * 2**20 + 3, seed=5)
    stream = Stream(chunked(data, 2**20))
    pointer = await storage.write_data_stream(stream, stream.get_digest, {})
    chunks = [chunk async for chunk in storage.read_data_stream(pointer)]
    assert sum(map(len, chunks)) == len(data)  # sshfs's own _cat_file returned 3x as much
    assert max(map(len, chunks)) <= 2**20
    assert b"".join(chunks) == data
    target = storage._backends_for("sftp").target
    path = f"{pointer['root']}/{pointer['path']}"
    for start, end in [(0, 1), (5, 2**20 + 7), (len(data) - 3, len(data)), (7, 7), (10, None)]:
        assert await target.read(path, start, end) == data[start:end]


async def test_both_spellings_write_sftp_pointers_and_read_each_others(
    backend: BackendInfo,
) -> None:
    url = backend.new_url()
    ssh = storage_at(backend, url.replace("sftp://", "ssh://", 1))
    sftp = storage_at(backend, url)
    pointer = await ssh.write_data(b"spelt", digest_of(b"spelt"), {})
    assert pointer["protocol"] == "sftp"
    assert await sftp.read_data(pointer) == b"spelt"
    assert await ssh.read_data({**pointer, "protocol": "ssh"}) == b"spelt"  # an old pointer


async def test_the_password_in_the_url_is_used(backend: BackendInfo) -> None:
    authority = backend.server.authority  # type: ignore[union-attr]
    user, _, address = authority.partition("@")
    url = backend.new_url().replace(authority, f"{user}:{PASSWORD}@{address}")
    options = {"known_hosts": backend.storage_options["known_hosts"]}
    storage = FsspecStorage(url, storage_options=options)
    pointer = await storage.write_data(b"by url", digest_of(b"by url"), {})
    assert await storage.read_data(pointer) == b"by url"
    assert PASSWORD not in repr(storage) + str(pointer)


async def test_an_unknown_host_key_is_refused_by_default(
    backend: BackendInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))  # asyncssh's default: ~/.ssh/known_hosts
    options = {"password": PASSWORD}
    refused = FsspecStorage(backend.new_url(), storage_options=options)
    with pytest.raises(Exception, match="not trusted") as caught:
        await refused.write_data(b"x", digest_of(b"x"), {})
    assert not isinstance(caught.value, StorageUnavailableError)  # not worth retrying
    assert any("known_hosts" in note for note in getattr(caught.value, "__notes__", []))
    # The user's own known_hosts file is what asyncssh reads by default.
    trust(Path(backend.storage_options["known_hosts"]), tmp_path)
    trusted = FsspecStorage(backend.new_url(), storage_options=options)
    pointer = await trusted.write_data(b"x", digest_of(b"x"), {})
    assert await trusted.read_data(pointer) == b"x"


def trust(known_hosts: Path, home: Path) -> None:
    """Make ``known_hosts`` the user's own (``home``/.ssh/known_hosts)."""
    (home / ".ssh").mkdir()
    (home / ".ssh" / "known_hosts").write_text(known_hosts.read_text())


async def test_known_hosts_none_accepts_any_key(
    backend: BackendInfo, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    storage = FsspecStorage(
        backend.new_url(), storage_options={"password": PASSWORD, "known_hosts": None}
    )
    pointer = await storage.write_data(b"any", digest_of(b"any"), {})
    assert await storage.read_data(pointer) == b"any"


async def test_the_same_and_new_storages_work_after_a_server_restart(
    backend: BackendInfo,
) -> None:
    server = backend.server
    assert server is not None
    url = backend.new_url()
    storage = storage_at(backend, url)
    first = await storage.write_data(b"before", digest_of(b"before"), {})
    server.stop()
    try:
        with pytest.raises(StorageUnavailableError, match=r"^read_data sftp://"):
            await storage.read_data(first)
        with pytest.raises(StorageUnavailableError, match=r"sftp://"):
            await storage_at(backend, url).write_data(b"x", digest_of(b"x"), {})
    finally:
        server.start()
    assert await storage.read_data(first) == b"before"
    later = storage_at(backend, url)  # fsspec's cache held the dead instance
    second = await later.write_data(b"after", digest_of(b"after"), {})
    assert await storage.read_data(second) == b"after"
    # And after a restart between calls, with nothing in flight.
    server.stop()
    server.start()
    assert await asyncio.gather(*(storage.read_data(first) for _ in range(8))) == [b"before"] * 8


async def test_rename_refuses_an_existing_object(backend: BackendInfo) -> None:
    storage = storage_at(backend)
    target = storage._backends_for("sftp").target
    root = storage.location.root
    fs = backend.fs()
    fs.pipe_file(f"{root}/a", b"first")
    fs.pipe_file(f"{root}/b", b"other")  # the same size: one of another size is damage
    assert await target.move(f"{root}/b", f"{root}/a", digest_of(b"other")) is False
    assert fs.cat_file(f"{root}/a") == b"first"
    assert not fs.exists(f"{root}/b")  # the refused source is removed
    assert await target.move(f"{root}/a", f"{root}/new/c", digest_of(b"first")) is True
    assert fs.cat_file(f"{root}/new/c") == b"first"


# --- lakery-fsspec check explains ---------------------------------------------------------


def check(url: str, options: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> str:
    args = [arg for key, value in options.items() for arg in ("-o", f"{key}={value}")]
    assert main(["check", url, *args, "--timeout", "5"]) == 1
    captured = capsys.readouterr()
    out = captured.out + captured.err
    assert PASSWORD not in out
    return out


def test_check_connection_refused(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    authority = backend.server.authority  # type: ignore[union-attr]
    url = backend.new_url().replace(authority, "lake@127.0.0.1:9")
    out = check(url, backend.storage_options, capsys)
    assert "connection refused" in out
    assert "fix: " in out


def test_check_bad_password(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    options = {**backend.storage_options, "password": "wrong"}
    out = check(backend.new_url(), options, capsys)
    assert "refused to log in" in out
    assert "fix: " in out
    assert "password" in out


def test_check_unknown_host_key(
    backend: BackendInfo,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    out = check(backend.new_url(), {"password": PASSWORD}, capsys)
    assert "host key is not known" in out
    assert "known_hosts" in out.split("fix: ", 1)[1]


def test_check_missing_folder(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    url = backend.new_url()
    blocker = f"{backend.fs()._strip_protocol(url)}"
    backend.fs().pipe_file(blocker, b"a file where the storage's folder should be")
    out = check(f"{url}/lake", backend.storage_options, capsys)
    assert "folder" in out
    assert "does not exist" in out
    assert "fix: " in out


def test_check_permission_denied(backend: BackendInfo, capsys: pytest.CaptureFixture[str]) -> None:
    authority = backend.server.authority  # type: ignore[union-attr]
    url = backend.new_url().replace(authority, f"{READER}@{authority.partition('@')[2]}")
    out = check(url, backend.storage_options, capsys)
    assert "denied" in out
    assert "read-only" in out
    assert "fix: " in out
