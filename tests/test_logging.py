"""Logging: one DEBUG line per operation on the `lakery_fsspec` logger, with protocol,
path, size and duration."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, Stream, chunked, digest_of, payload

from lakery_fsspec import FsspecStorage

DURATION = r"in \d+\.\d{4} s"


async def test_one_debug_line_per_operation(
    backend: BackendInfo, root_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="lakery_fsspec")
    storage = FsspecStorage(root_url, storage_options=backend.storage_options, chunk_size=CHUNK)
    data = payload(2 * CHUNK + 3)
    pointer = storage._pointer(
        f"{digest_of(data)['content_hash'][:2]}/{digest_of(data)['content_hash']}.bin",
        digest_of(data),
    )
    url = f"{backend.protocol}://{pointer['root']}/{pointer['path']}"
    other = payload(100, seed=1)

    def stream_of(content: bytes) -> Callable[[], Awaitable[Any]]:
        stream = Stream(chunked(content, 1000))
        return lambda: storage.write_data_stream(stream, stream.get_digest, {})

    async def read_stream() -> bytes:
        return b"".join([chunk async for chunk in storage.read_data_stream(pointer)])

    operations: list[tuple[str, Callable[[], Awaitable[Any]], str]] = [
        ("write_data", lambda: storage.write_data(data, digest_of(data), {}), url),
        ("write_data (exists)", lambda: storage.write_data(data, digest_of(data), {}), url),
        ("write_data_stream", stream_of(other), f"{backend.protocol}://{pointer['root']}/"),
        ("read_data", lambda: storage.read_data(pointer), url),
        ("read_data_stream", read_stream, url),
    ]
    for operation, call, where in operations:
        caplog.clear()
        await call()
        records = [record for record in caplog.records if record.name == "lakery_fsspec"]
        assert len(records) == 1, [record.getMessage() for record in records]
        [record] = records
        assert record.levelno == logging.DEBUG
        size = len(other) if operation == "write_data_stream" else len(data)
        message = record.getMessage()
        pattern = rf"{re.escape(operation)} {re.escape(where)}\S* {size} bytes {DURATION}"
        assert re.fullmatch(pattern, message), message

    caplog.clear()
    assert await storage.cleanup_temp(older_than=0) == []
    [record] = [record for record in caplog.records if record.name == "lakery_fsspec"]
    temp = f"{backend.protocol}://{pointer['root']}/.lakery-tmp"
    removed = "removed 0 temp objects and 0 unfinished uploads"
    pattern = rf"cleanup_temp {re.escape(temp)} {removed} {DURATION}"
    assert re.fullmatch(pattern, record.getMessage()), record.getMessage()


async def test_nothing_is_formatted_above_debug(
    root_url: str, backend: BackendInfo, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="lakery_fsspec")
    storage = FsspecStorage(root_url, storage_options=backend.storage_options)
    pointer = await storage.write_data(b"x", digest_of(b"x"), {})
    assert await storage.read_data(pointer) == b"x"
    assert [record for record in caplog.records if record.name == "lakery_fsspec"] == []
