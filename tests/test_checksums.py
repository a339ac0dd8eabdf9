"""Checksums the server verifies: a request body damaged in transit fails the write.

Each cloud is reached through a loopback proxy (tests/proxy.py) that can flip one byte in
the middle of a request body. Writes must then fail with IntegrityError ("checksum
mismatch", naming the object), leave nothing at the final path, no temp object and no
unfinished upload. Which side catches it differs by emulator:

- Azurite verifies Content-MD5 on Put Blob and Put Block (and rejects with 400). Azure
  objects over 1 MiB go as staged blocks (aiohttp warns about larger raw bodies): a blob
  or short stream of a few MiB is then one Put Block with the whole object's MD5.
- fake-gcs-server verifies nothing, but reports the crc32c/md5Hash of what it stored,
  which the writer compares (real GCS refuses the upload itself).
- moto verifies no checksum either; for a multipart upload it reports the full-object
  CRC32 of the bytes it assembled, which the writer compares. A single PutObject (a
  blob, a stream shorter than one part) it stores as received: AWS would refuse it
  (BadDigest), moto cannot show that, so those cases are strict xfails on moto.
- SeaweedFS (backend seaweedfs) verifies x-amz-checksum-* itself and refuses a damaged
  body with BadDigest: there every case passes, the single PutObject included.
"""

from __future__ import annotations

import base64
import hashlib
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from conftest import S3_BACKENDS, BackendInfo
from helpers import Stream, chunked, digest_of, payload
from proxy import HOST, CorruptingProxy, Request
from servers import GCSServer

from lakery_fsspec import FsspecStorage, IntegrityError
from lakery_fsspec._backends import spec_for

pytestmark = pytest.mark.backends("s3", "gcs", "azure")

CHUNK = 2**20
MOTO_CANNOT_TELL = "moto stores a single PutObject as received, whatever its checksum says"


@dataclass
class Proxied:
    """A cloud emulator with a corrupting proxy in front of it."""

    backend: BackendInfo  # the emulator itself, for assertions
    proxy: CorruptingProxy

    @property
    def block_size(self) -> int:
        return spec_for(self.backend.protocol).backend.block_size(CHUNK)

    def storage(self, **extra_options: Any) -> FsspecStorage:
        """A storage under a fresh root, reaching the emulator through the proxy."""
        endpoint = self.backend.endpoint
        assert endpoint is not None
        options = {
            key: value.replace(endpoint, self.proxy.endpoint) if isinstance(value, str) else value
            for key, value in self.backend.storage_options.items()
        }
        return FsspecStorage(
            self.backend.new_url(), storage_options={**options, **extra_options}, chunk_size=CHUNK
        )


class _GCSBehindProxy(GCSServer):
    """fake-gcs-server that hands out resumable-upload URLs on the proxy's port."""

    def __init__(self, public_port: int) -> None:
        super().__init__()
        self.public_port = public_port

    def command(self) -> list[str]:
        command = super().command()
        public = f"{HOST}:{self.public_port}"
        command[command.index("-external-url") + 1] = f"http://{public}"
        command[command.index("-public-host") + 1] = public
        return command


@pytest.fixture(scope="session")
def proxied(backend: BackendInfo) -> Iterator[Proxied]:
    if backend.name != "gcs":
        assert backend.server is not None
        server = backend.server
        with CorruptingProxy(lambda: (HOST, server.port)) as proxy:
            yield Proxied(backend, proxy)
        return
    # fake-gcs-server puts its own public address in the session URLs of resumable uploads.
    holder: list[GCSServer] = []
    proxy = CorruptingProxy(lambda: (HOST, holder[0].port))
    with proxy, _GCSBehindProxy(proxy.port) as server:
        holder.append(server)
        yield Proxied(BackendInfo("gcs", server.storage_options, server.bucket, server), proxy)


@pytest.fixture
def setup(proxied: Proxied) -> Iterator[tuple[Proxied, FsspecStorage]]:
    proxied.proxy.corrupt(None)
    proxied.proxy.clear()
    yield proxied, proxied.storage()
    proxied.proxy.corrupt(None)


# --- which requests carry the bytes ------------------------------------------------------


def _query(request: Request) -> str:
    return request.target.partition("?")[2]


def object_puts(name: str) -> Callable[[Request], bool]:
    """Requests that upload a whole object in one go (on Azure: a Put Blob, or the only
    Put Block of an object over 1 MiB)."""
    if name in S3_BACKENDS:
        return lambda r: r.method == "PUT" and "uploadId=" not in _query(r)
    if name == "gcs":
        return lambda r: r.method == "POST" and "uploadType=multipart" in _query(r)
    return lambda r: r.method == "PUT" and ("comp=" not in _query(r) or block_uploads(name)(r))


def block_uploads(name: str) -> Callable[[Request], bool]:
    """Requests that upload one block (part, chunk) of a stream."""
    if name in S3_BACKENDS:
        return lambda r: r.method == "PUT" and "partNumber=" in _query(r)
    if name == "gcs":
        return lambda r: r.method == "PUT" and "upload_id=" in _query(r)
    return lambda r: (
        r.method == "PUT" and "comp=block" in _query(r) and "blocklist" not in _query(r)
    )


def with_body(select: Callable[[Request], bool]) -> Callable[[Request], bool]:
    return lambda r: select(r) and int(r.headers.get("content-length", "0") or 0) > 0


# --- what must be left afterwards --------------------------------------------------------


def leftovers(backend: BackendInfo, storage: FsspecStorage) -> list[str]:
    """Objects under the storage's root, plus unfinished uploads (S3 multipart uploads,
    Azure blobs with only uncommitted blocks); not gc's markers (a write that finds its
    content stored leaves one)."""
    root = storage.location.root.rstrip("/")
    found = [str(path) for path in backend.fs().find(root) if "/.lakery-fresh/" not in path]
    prefix = root.split("/", 1)[1] + "/"
    if backend.is_s3:
        client = backend.server.client  # type: ignore[union-attr]
        uploads = client.list_multipart_uploads(Bucket=backend.root, Prefix=prefix)
        found += [f"upload:{upload['Key']}" for upload in uploads.get("Uploads", [])]
    if backend.name == "azure":
        container = backend.server.container  # type: ignore[union-attr]
        listed = container.list_blobs(name_starts_with=prefix, include=["uncommittedblobs"])
        committed = {blob.name for blob in container.list_blobs(name_starts_with=prefix)}
        found += [f"blob:{blob.name}" for blob in listed if blob.name not in committed]
    return found


async def write(storage: FsspecStorage, data: bytes, how: str) -> Any:
    if how in ("blob", "small_blob"):
        return await storage.write_data(data, digest_of(data), {})
    stream = Stream(chunked(data, CHUNK // 4))
    return await storage.write_data_stream(stream, stream.get_digest, {})


def size_for(proxied: Proxied, how: str) -> int:
    """A blob of a few MiB, or under 1 MiB ("small_blob"); a stream of two blocks, or
    less than one ("short_stream")."""
    if how == "stream":
        return proxied.block_size + CHUNK + 17
    if how == "short_stream":
        return proxied.block_size // 2 + 3
    if how == "whole_blocks":
        return 2 * proxied.block_size
    if how == "small_blob":
        return CHUNK // 2 + 5
    return 3 * CHUNK + 5


# --- the tests ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", ["blob", "small_blob", "stream", "short_stream"])
async def test_damaged_body_fails_the_write_and_leaves_nothing(
    setup: tuple[Proxied, FsspecStorage], how: str, request: pytest.FixtureRequest
) -> None:
    proxied, storage = setup
    name = proxied.backend.name
    if name == "s3" and how != "stream":  # moto; SeaweedFS refuses with BadDigest
        request.applymarker(pytest.mark.xfail(strict=True, reason=MOTO_CANNOT_TELL))
    data = payload(size_for(proxied, how), seed=len(how))
    select = block_uploads(name) if how == "stream" else object_puts(name)
    proxied.proxy.corrupt(with_body(select))

    with pytest.raises(IntegrityError, match="checksum mismatch") as caught:
        await write(storage, data, how)

    assert any(r.corrupted for r in proxied.proxy.requests), "no body was damaged"
    assert storage.location.root in str(caught.value)  # names the object
    assert leftovers(proxied.backend, storage) == []
    # The same write goes through once the network is sound again.
    proxied.proxy.corrupt(None)
    pointer = await write(storage, data, how)
    assert await storage.read_data(pointer) == data


@pytest.mark.parametrize("how", ["blob", "small_blob", "stream", "short_stream", "whole_blocks"])
async def test_writes_carry_checksums_that_match_and_round_trip(
    setup: tuple[Proxied, FsspecStorage], how: str
) -> None:
    proxied, storage = setup
    name = proxied.backend.name
    data = payload(size_for(proxied, how), seed=7)

    pointer = await write(storage, data, how)

    assert await storage.read_data(pointer) == data
    assert b"".join([chunk async for chunk in storage.read_data_stream(pointer)]) == data
    assert not any(r.corrupted for r in proxied.proxy.requests)
    blocks = [data[i : i + proxied.block_size] for i in range(0, len(data), proxied.block_size)]
    if how in ("stream", "whole_blocks"):
        sent = [r for r in proxied.proxy.requests if with_body(block_uploads(name))(r)]
        assert len(sent) == len(blocks) == 2
        if name in S3_BACKENDS:
            assert [r.headers["x-amz-checksum-crc32"] for r in sent] == [crc32(b) for b in blocks]
            # The move (a multipart copy) keeps a full-object CRC32 that reads validate.
            client = proxied.backend.server.client  # type: ignore[union-attr]
            key = f"{pointer['root'].split('/', 1)[1]}/{pointer['path']}"
            head = client.head_object(Bucket=proxied.backend.root, Key=key, ChecksumMode="ENABLED")
            assert (head["ChecksumCRC32"], head["ChecksumType"]) == (crc32(data), "FULL_OBJECT")
        if name == "azure":
            assert [r.headers["content-md5"] for r in sent] == [md5(b) for b in blocks]
        if name == "gcs":  # the last request carries the whole object's checksum
            session = [r for r in proxied.proxy.requests if block_uploads(name)(r)]
            assert len(session) == 2  # the last block ends the upload (no empty request)
            assert all("x-goog-hash" not in r.headers for r in session[:-1])
            assert session[-1].headers["x-goog-hash"] == f"crc32c={crc32c(data)}"
        return
    [sent] = [r for r in proxied.proxy.requests if with_body(object_puts(name))(r)]
    if name in S3_BACKENDS:
        expected = sha256(data) if "blob" in how else None
        header = "x-amz-checksum-sha256" if "blob" in how else "x-amz-checksum-crc32"
        assert sent.headers[header] == (expected or crc32(data))
    if name == "azure":
        assert sent.headers["content-md5"] == md5(data)
    if name == "gcs":  # in the object resource, the first part of the multipart body
        resource = json.loads(sent.body_start.split(b"\r\n\r\n", 1)[1].split(b"\r\n", 1)[0])
        assert resource["crc32c"] == crc32c(data)


@pytest.mark.backends("s3", "azure")
@pytest.mark.parametrize("damaged", [False, True])
async def test_blob_above_the_single_put_limit_goes_in_checked_blocks(
    setup: tuple[Proxied, FsspecStorage], monkeypatch: pytest.MonkeyPatch, damaged: bool
) -> None:
    # S3's single-put limit (5 GiB) lowered, so that a small blob crosses; Azure's blocks
    # of blobs (64 MiB, the SDK's single-put limit) cut to one stream block.
    proxied, storage = setup
    name = proxied.backend.name
    module = f"lakery_fsspec._backends.{'s3' if name in S3_BACKENDS else name}"
    if name in S3_BACKENDS:
        monkeypatch.setattr(f"{module}._MAX_PUT_OBJECT", CHUNK)
    else:
        monkeypatch.setattr(f"{module}._PUT_BLOCK", proxied.block_size)
    data = payload(proxied.block_size + CHUNK + 3, seed=11)
    if damaged:
        proxied.proxy.corrupt(with_body(block_uploads(name)))
        with pytest.raises(IntegrityError, match="checksum mismatch"):
            await write(storage, data, "blob")
        assert any(r.corrupted for r in proxied.proxy.requests)
        assert leftovers(proxied.backend, storage) == []
        return
    pointer = await write(storage, data, "blob")
    assert len([r for r in proxied.proxy.requests if with_body(block_uploads(name))(r)]) == 2
    assert await storage.read_data(pointer) == data
    assert await write(storage, data, "blob") == pointer  # exists: refused, not rewritten
    assert leftovers(proxied.backend, storage) == [f"{pointer['root']}/{pointer['path']}"]


@pytest.mark.backends("s3")
@pytest.mark.parametrize("how", ["blob", "stream", "short_stream"])
async def test_s3_checksums_follow_botocore_when_required(
    setup: tuple[Proxied, FsspecStorage], how: str
) -> None:
    # The escape hatch for S3-compatible servers that refuse checksums.
    proxied, _ = setup
    config = {"request_checksum_calculation": "when_required"}
    storage = proxied.storage(config_kwargs=config)
    data = payload(size_for(proxied, how), seed=3)
    pointer = await write(storage, data, how)
    assert await storage.read_data(pointer) == data
    uploads = [r for r in proxied.proxy.requests if with_body(lambda r: r.method == "PUT")(r)]
    assert uploads
    assert not [r for r in uploads if any(h.startswith("x-amz-checksum") for h in r.headers)]


@pytest.mark.backends("s3")
@pytest.mark.parametrize("validation", [None, "when_supported"])
async def test_s3_reads_leave_the_crc32_to_botocore_only_when_asked(
    setup: tuple[Proxied, FsspecStorage], validation: str | None
) -> None:
    """botocore's default asks for (``x-amz-checksum-mode``) and computes the CRC32 of
    every object read that has a full-object one, as streams do; the storage's reads do
    not (``verify_reads`` checks the pointer's SHA-256), unless the client is told to."""
    proxied, _ = setup
    config = {"config_kwargs": {"response_checksum_validation": validation}} if validation else {}
    storage = proxied.storage(**config)
    data = payload(size_for(proxied, "stream"), seed=5)
    pointer = await write(storage, data, "stream")
    proxied.proxy.clear()
    assert await storage.read_data(pointer) == data
    assert b"".join([chunk async for chunk in storage.read_data_stream(pointer)]) == data
    gets = [r for r in proxied.proxy.requests if r.method == "GET"]
    assert len(gets) == 2
    asked = [r.headers.get("x-amz-checksum-mode") == "ENABLED" for r in gets]
    assert asked == [validation is not None] * 2


async def test_broken_stream_leaves_no_upload(setup: tuple[Proxied, FsspecStorage]) -> None:
    proxied, storage = setup
    data = payload(3 * proxied.block_size)
    # Breaks after two blocks: the first one has arrived by then.
    stream = Stream(chunked(data, CHUNK), fail_after=2 * (proxied.block_size // CHUNK) + 1)
    with pytest.raises(Exception, match="stream broke"):
        await storage.write_data_stream(stream, stream.get_digest, {})
    assert any(with_body(block_uploads(proxied.backend.name))(r) for r in proxied.proxy.requests)
    assert leftovers(proxied.backend, storage) == []


def sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def md5(data: bytes) -> str:
    return base64.b64encode(hashlib.md5(data).digest()).decode()


def crc32(data: bytes) -> str:
    return base64.b64encode(zlib.crc32(data).to_bytes(4, "big")).decode()


def crc32c(data: bytes) -> str:
    import google_crc32c

    return base64.b64encode(google_crc32c.value(data).to_bytes(4, "big")).decode()
