"""Every refusal read by what the server said, whatever the body's words: S3 servers that
answer a bare 412, a 409 ConditionalRequestConflict, or refuse If-None-Match or a
checksum header outright (501 NotImplemented, 400 InvalidArgument/InvalidRequest).

A loopback proxy (tests/proxy.py) in front of the S3 server answers the selected
requests itself, as such a server would; everything else reaches the server.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload
from proxy import HOST, CorruptingProxy, Request

from lakery_fsspec import FsspecStorage
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("s3")

CHUNK = 2**20
FALLBACK = "lakery_fsspec.fallback"


@pytest.fixture(scope="session")
def proxy(backend: BackendInfo) -> Iterator[CorruptingProxy]:
    server = backend.server
    assert server is not None
    with CorruptingProxy(lambda: (HOST, server.port)) as proxy:
        yield proxy


@pytest.fixture
def storage(backend: BackendInfo, proxy: CorruptingProxy) -> Iterator[FsspecStorage]:
    proxy.refuse(None)
    proxy.clear()
    options = {**backend.storage_options, "endpoint_url": proxy.endpoint}
    yield FsspecStorage(backend.new_url(), storage_options=options, chunk_size=CHUNK)
    proxy.refuse(None)


def conditional(request: Request) -> bool:
    return "if-none-match" in request.headers


def once(select: Callable[[Request], bool]) -> Callable[[Request], bool]:
    """``select``, for the first request it selects only."""
    done: list[Request] = []

    def first(request: Request) -> bool:
        if done or not select(request):
            return False
        done.append(request)
        return True

    return first


async def write_both(storage: FsspecStorage, seed: int) -> tuple[Any, Any]:
    blob = payload(1000, seed=seed)
    data = payload(2 * CHUNK + 7, seed=seed)
    stream = Stream(chunked(data, CHUNK // 2))
    return (
        await storage.write_data(blob, digest_of(blob), {}),
        await storage.write_data_stream(stream, stream.get_digest, {}),
    )


def fallbacks(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == FALLBACK]


async def test_bare_412_to_a_create_only_write_means_already_stored(
    storage: FsspecStorage, proxy: CorruptingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # SeaweedFS's answer: no <Condition> in the body, which s3fs needs to see "exists".
    # (Stored first: a refused create is followed by one HEAD that tells the content
    # already stored from a damaged or missing object, which would be written again.)
    data = payload(1000)
    await storage.write_data(data, digest_of(data), {})
    proxy.clear()
    proxy.refuse(once(conditional), 412, "PreconditionFailed")
    with caplog.at_level(logging.DEBUG, logger="lakery_fsspec"):
        pointer = await storage.write_data(data, digest_of(data), {})
    assert [r.method for r in proxy.requests if conditional(r)] == ["PUT"]  # the bare 412
    assert any(r.args and r.args[0] == "write_data (exists)" for r in caplog.records)
    assert pointer["path"].endswith(".bin")
    assert fallbacks(caplog) == []


async def test_conflict_409_looks_again(
    storage: FsspecStorage, proxy: CorruptingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.refuse(once(conditional), 409, "ConditionalRequestConflict")
    data = payload(1000, seed=3)
    with caplog.at_level(logging.DEBUG, logger="lakery_fsspec"):
        pointer = await storage.write_data(data, digest_of(data), {})
    assert await storage.read_data(pointer) == data
    assert len([r for r in proxy.requests if conditional(r) and r.method == "PUT"]) == 2
    assert any(r.args and r.args[0] == "write_data" for r in caplog.records)  # created


async def test_conflict_409_that_persists_is_raised(
    storage: FsspecStorage, proxy: CorruptingProxy
) -> None:
    proxy.refuse(conditional, 409, "ConditionalRequestConflict")
    data = payload(1000, seed=4)
    with pytest.raises(OSError, match="ConditionalRequestConflict"):
        await storage.write_data(data, digest_of(data), {})


@pytest.mark.parametrize(
    ("status", "code"),
    [(501, "NotImplemented"), (400, "InvalidArgument"), (400, "InvalidRequest")],
)
async def test_server_refusing_if_none_match_falls_back_to_check_then_move(
    storage: FsspecStorage,
    proxy: CorruptingProxy,
    caplog: pytest.LogCaptureFixture,
    status: int,
    code: str,
) -> None:
    proxy.refuse(conditional, status, code)
    with caplog.at_level(logging.WARNING, logger="lakery_fsspec"):
        first = await write_both(storage, seed=1)
        assert await write_both(storage, seed=1) == first  # stored once: "exists"
        second = await write_both(storage, seed=2)
    for pointer, size in [(first[0], 1000), (second[1], 2 * CHUNK + 7)]:
        assert len(await storage.read_data(pointer)) == size
    [message] = fallbacks(caplog)  # once per storage
    assert "refused conditional writes (If-None-Match" in message
    assert len([r for r in proxy.requests if conditional(r)]) == 1  # never sent again
    assert await storage.list_temp() == []


async def test_refusal_that_stays_without_the_header_is_the_error(
    storage: FsspecStorage, proxy: CorruptingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    # A 400 may mean another mistake: without If-None-Match it is refused still.
    proxy.refuse(lambda r: r.method == "PUT", 400, "InvalidRequest")
    data = payload(1000, seed=5)
    with (
        caplog.at_level(logging.WARNING, logger="lakery_fsspec"),
        pytest.raises(OSError, match="refused by the test proxy"),
    ):
        await storage.write_data(data, digest_of(data), {})
    assert fallbacks(caplog) == []


async def test_server_refusing_the_checksum_header_falls_back_once(
    storage: FsspecStorage, proxy: CorruptingProxy, caplog: pytest.LogCaptureFixture
) -> None:
    proxy.refuse(lambda r: "x-amz-checksum-sha256" in r.headers, 400, "InvalidArgument")
    with caplog.at_level(logging.WARNING, logger="lakery_fsspec"):
        blobs = [payload(1000, seed=seed) for seed in (6, 7)]
        pointers = [await storage.write_data(b, digest_of(b), {}) for b in blobs]
    assert [await storage.read_data(p) for p in pointers] == blobs
    [message] = fallbacks(caplog)
    assert "refused upload checksums" in message
    # Refused, then refused again without If-None-Match (tried first), never sent since.
    assert len([r for r in proxy.requests if "x-amz-checksum-sha256" in r.headers]) == 2


def test_check_says_what_the_server_refused(
    backend: BackendInfo, proxy: CorruptingProxy, capsys: pytest.CaptureFixture[str]
) -> None:
    proxy.refuse(conditional, 501, "NotImplemented")
    try:
        url = backend.new_url()
        options = [f"-o=endpoint_url={proxy.endpoint}"]
        for name in ("key", "secret"):
            options.append(f"-o={name}={backend.storage_options[name]}")
        assert main(["check", url, *options, "--size", "256KiB"]) == 0
    finally:
        proxy.refuse(None)
    out = capsys.readouterr().out
    assert "note: S3 server " in out
    assert "refused conditional writes (If-None-Match: *)" in out
