"""Work that test_processes.py runs in child processes (importable by spawned children)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

from helpers import Stream, payload, read, write
from labox.common.types import TagMap
from labox.core.storage import Digest

from lakery_fsspec import FsspecStorage

if _sftp_client := os.environ.get("LAKERY_TEST_SFTP_CLIENT"):
    # A spawned child gets the SFTP client under test, as conftest chose it in the parent.
    from conftest import use_sftp_client

    use_sftp_client(_sftp_client)

CHILD_SIZE = 200_000
"""Bytes a child writes: several chunks of the storages under test."""


def round_trip(storage: FsspecStorage, seed: int, how: str) -> tuple[Any, bool]:
    """In a child: write new content through ``storage``, read it back, and return the
    pointer and whether the bytes came back intact. One ``asyncio.run`` per call."""
    data = payload(CHILD_SIZE, seed)
    pointer = asyncio.run(write(storage, data, how))
    return pointer, asyncio.run(read(storage, pointer, how)) == data


def read_back(storage: FsspecStorage, pointer: Any, how: str) -> str:
    """In a child: the sha256 of an object the parent wrote."""
    return hashlib.sha256(asyncio.run(read(storage, pointer, how))).hexdigest()


def read_back_together(gate: Any, storage: FsspecStorage, pointer: Any, how: str) -> str:
    """In a child: ``read_back`` once every child has reached ``gate`` (a Barrier)."""
    gate.wait(timeout=60)
    return read_back(storage, pointer, how)


def both(storage: FsspecStorage, seed: int) -> list[tuple[Any, bool]]:
    """In a child: a blob and a stream round trip."""
    return [round_trip(storage, seed, "blob"), round_trip(storage, seed + 1, "stream")]


def by_tag(digest: Digest, tags: TagMap) -> str:
    """A callable router that pickles by reference."""
    return f"{tags.get('team', 'none')}/{digest['content_hash']}"


def report(queue: Any, work: Callable[..., Any], *args: Any) -> None:
    """``multiprocessing.Process`` target: put ``work(*args)`` (or the error) on ``queue``."""
    try:
        queue.put(work(*args))
    except BaseException as error:
        queue.put(repr(error))
        raise


def broken_stream(storage: FsspecStorage) -> str:
    """In a child: a stream that breaks midway; the name of what the write raised."""
    stream = Stream([payload(CHILD_SIZE, 7)] * 3, fail_after=2)
    try:
        asyncio.run(storage.write_data_stream(stream, stream.get_digest, {}))
    except BaseException as error:
        return type(error).__name__
    return "nothing"
