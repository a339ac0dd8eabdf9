"""Secrets: a credential in storage_options never shows in pointers, serialized storage
data, repr/str, exception messages or DEBUG logs, on every backend."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload
from servers import AZURITE_KEY
from servers_ftp import PASSWORD as FTP_PASSWORD
from servers_ftp import READER as FTP_READER
from servers_sftp import PASSWORD as SFTP_PASSWORD
from servers_sftp import READER

from lakery_fsspec import FsspecStorage

SENTINEL = "SeNtInEl-7f3a9c2e-SeCrEt"
WRONG_AZURE_KEY = base64.b64encode(f"{SENTINEL}-wrong-key-padding".encode()).decode()


def secret_options(backend: BackendInfo) -> tuple[dict[str, Any], list[str]]:
    """Working storage options holding a secret, and the secrets to look for."""
    if backend.name == "s3":  # moto does not check signatures: any secret key works
        return {**backend.storage_options, "secret": SENTINEL}, [SENTINEL]
    if backend.name == "seaweedfs":  # the secret key it was started with, which it checks
        return dict(backend.storage_options), [backend.storage_options["secret"], SENTINEL]
    if backend.name == "gcs":  # an OAuth access token; the emulator ignores it
        return {**backend.storage_options, "token": SENTINEL}, [SENTINEL]
    if backend.name == "azure":  # the account key inside the connection string
        return dict(backend.storage_options), [AZURITE_KEY, WRONG_AZURE_KEY]
    if backend.name == "ftp":  # the user's password
        return dict(backend.storage_options), [FTP_PASSWORD]
    if backend.name in ("sftp", "sshfs"):  # the server's only password
        return dict(backend.storage_options), [SFTP_PASSWORD]
    if backend.name == "webdav":  # the user's password, which the server checks
        return dict(backend.storage_options), [backend.storage_options["auth"][1]]
    return {"api_secret": SENTINEL}, [SENTINEL]  # memory and local take any option


def messages(error: BaseException) -> Iterator[str]:
    """The message and repr of an exception and of everything in its chain."""
    seen: set[int] = set()
    pending: list[BaseException | None] = [error]
    while pending:
        current = pending.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        yield str(current)
        yield repr(current)
        yield from map(str, current.args)
        pending += [current.__cause__, current.__context__]


async def provoked_errors(
    backend: BackendInfo, storage: FsspecStorage, options: dict[str, Any]
) -> list[BaseException]:
    """Exceptions of every kind the storage raises, raised with the secret configured."""
    url = backend.new_url()
    errors: list[BaseException] = []

    async def catch(call: Any) -> None:
        try:
            await call
        except Exception as error:
            errors.append(error)
        else:
            raise AssertionError(f"{call} did not raise")

    pointer = await storage.write_data(b"x", digest_of(b"x"), {})
    await catch(storage.read_data({**pointer, "path": "ab/missing"}))  # NoStorageData
    other = "file" if backend.protocol != "file" else "memory"
    foreign = {**pointer, "protocol": other, "path": "ab/missing"}  # not under our root either
    await catch(storage.read_data(foreign))  # ValueError: foreign protocol
    tagged = FsspecStorage(url, storage_options=options, router="{tags[t]}/{content_hash}")
    await catch(tagged.write_data(b"x", digest_of(b"x"), {"t": ".."}))  # ValueError: bad tag
    read_only = FsspecStorage(url, storage_options=options, router=None)
    await catch(read_only.write_data(b"x", digest_of(b"x"), {}))  # ReadOnlyStorageError
    checked = FsspecStorage(backend.new_url(), storage_options=options, verify_reads=True)
    pointer = await checked.write_data(b"abc", digest_of(b"abc"), {})
    backend.fs().pipe_file(f"{pointer['root']}/{pointer['path']}", b"abd")
    await catch(checked.read_data(pointer))  # IntegrityError
    if backend.server is None:
        return errors
    if backend.name in ("sftp", "sshfs"):
        return errors + await server_errors(backend, backend.server.authority, options)
    # The backend's own errors: a missing bucket, a server that does not answer.
    scheme = backend.schemes[0]
    missing = FsspecStorage(f"{scheme}://no-such-bucket-3d1f/x", storage_options=options)
    if backend.name == "ftp":  # a folder that does not exist, and a user who cannot make it
        reader = {**options, "username": FTP_READER}
        missing = FsspecStorage(f"{backend.new_url()}/missing", storage_options=reader)
    if backend.name == "seaweedfs":  # it makes a bucket on the first write to it
        missing = FsspecStorage(backend.new_url(), storage_options={**options, "secret": SENTINEL})
    await catch(missing.write_data(b"x", digest_of(b"x"), {}))
    stream = Stream(chunked(payload(1000), 100))
    await catch(missing.write_data_stream(stream, stream.get_digest, {}))
    endpoint = backend.endpoint
    assert endpoint is not None
    dead = {
        k: v.replace(endpoint, "http://127.0.0.1:9") if isinstance(v, str) else v
        for k, v in options.items()
    }
    if backend.name == "ftp":  # nothing listens on port 9
        dead = {**options, "port": 9}
    unreachable = FsspecStorage(backend.new_url(), storage_options=dead, timeout=0.5)
    await catch(unreachable.write_data(b"x", digest_of(b"x"), {}))  # StorageUnavailableError
    if backend.name == "azure":  # a wrong key: the server refuses the signature
        wrong = {
            "connection_string": options["connection_string"].replace(AZURITE_KEY, WRONG_AZURE_KEY)
        }
        refused = FsspecStorage(backend.new_url(), storage_options=wrong)
        await catch(refused.write_data(b"x", digest_of(b"x"), {}))
    if backend.name == "sftp":  # passwords in the URL: a read-only user's, a wrong one
        user = f"{backend.server.authority.split('@')[0]}@"  # type: ignore[union-attr]
        in_url = {k: v for k, v in options.items() if k not in ("password", "username")}
        for login in (f"{READER}:{SFTP_PASSWORD}@", f"{user[:-1]}:{SFTP_PASSWORD}-wrong@"):
            url = backend.new_url().replace(user, login, 1)
            stored = FsspecStorage(url, storage_options=in_url)
            await catch(stored.write_data(b"x", digest_of(b"x"), {}))
    return errors


async def server_errors(
    backend: BackendInfo, authority: str, options: dict[str, Any]
) -> list[BaseException]:
    """The errors of a server named in URLs (SFTP), the password in the URL or in options:
    permission denied (a read-only user), a wrong password, a dead port."""
    errors: list[BaseException] = []

    async def failing(url: str, opts: dict[str, Any], **kwargs: Any) -> None:
        storage = FsspecStorage(url, storage_options=opts, **kwargs)
        try:
            await storage.write_data(b"x", digest_of(b"x"), {})
        except Exception as error:
            errors.append(error)
            return
        raise AssertionError(f"writing to {url} did not fail")

    user, _, address = authority.partition("@")
    path = backend.new_url().split(authority, 1)[1]
    scheme = backend.schemes[0]
    # What the URL names (user, host, port, password) must not be overridden by options.
    named = ("password", "username", "host", "port")
    no_password = {k: v for k, v in options.items() if k not in named}
    secret = options["password"]
    # The password in the URL itself, for a working storage and a read-only user.
    in_url = FsspecStorage(
        f"{scheme}://{user}:{secret}@{address}{path}", storage_options=no_password
    )
    pointer = await in_url.write_data(b"in url", digest_of(b"in url"), {})
    assert await in_url.read_data(pointer) == b"in url"
    errors.append(RuntimeError(repr(in_url)))  # its repr is checked with the messages
    await failing(f"{scheme}://{READER}:{secret}@{address}{path}", no_password)
    await failing(f"{scheme}://{user}@{address}{path}", {**no_password, "password": secret + "x"})
    dead = f"{scheme}://{user}:{secret}@127.0.0.1:9{path}"
    await failing(dead, no_password, timeout=0.5)
    assert "StorageUnavailableError" in {type(e).__name__ for e in errors} or any(
        isinstance(e, OSError) for e in errors
    )
    return errors


async def test_secrets_never_leak(
    backend: BackendInfo, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FETCH_RAW_TOKEN_EXPIRY", "false")  # gcsfs: no call to Google for a token
    options, secrets = secret_options(backend)
    caplog.set_level(logging.DEBUG)  # every logger, third-party ones included
    storage = FsspecStorage(backend.new_url(), storage_options=options, chunk_size=2**18)
    data = payload(3 * 2**18 + 5)
    stream = Stream(chunked(data, 2**16))
    pointers = [
        await storage.write_data(b"blob", digest_of(b"blob"), {}),
        await storage.write_data_stream(stream, stream.get_digest, {}),
    ]
    assert await storage.read_data(pointers[1]) == data
    assert b"".join([c async for c in storage.read_data_stream(pointers[0])]) == b"blob"
    await storage.cleanup_temp(older_than=0)
    errors = await provoked_errors(backend, storage, options)
    kinds = {type(error).__name__ for error in errors}
    assert {"NoStorageData", "ValueError", "ReadOnlyStorageError", "IntegrityError"} <= kinds
    if backend.server is not None:
        assert "StorageUnavailableError" in kinds

    exposed = {
        "pointers": [str(p) for p in pointers],
        "storage data": [storage.serialize_config(p) for p in pointers],
        "repr/str": [repr(storage), str(storage), repr(storage.location), repr(storage.router)],
        "exceptions": [text for error in errors for text in messages(error)],
        "logs": [record.getMessage() for record in caplog.records] + [caplog.text],
    }
    assert exposed["logs"], "nothing was logged"
    for secret in secrets:
        for where, texts in exposed.items():
            leaks = [text for text in texts if secret in text]
            assert not leaks, f"the secret leaked in {where}: {leaks[0][:300]}"
    # The storage did use the secret: it is in its options.
    assert any(secret in str(options) for secret in secrets)
