"""WebDAV's shared httpx client under many threads: httpcore's pool must never close a
connection it may have just handed to another thread (httpcore 1.0.9 closes idle
connections above its keep-alive cap without checking whether one is assigned, and the
thread it was assigned to then reads from a closed socket: ``ReadError: [Errno 9] Bad
file descriptor``)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import payload, write

from lakery_fsspec import FsspecStorage

pytestmark = pytest.mark.backends("webdav")


async def test_the_pool_closes_no_live_connection_under_load(
    backend: BackendInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    from httpcore._sync.connection_pool import ConnectionPool

    assign = ConnectionPool._assign_requests_to_connections  # pyright: ignore[reportPrivateUsage]
    closed_alive: list[Any] = []

    def counted(pool: Any) -> list[Any]:
        closing = assign(pool)
        # An expired or dropped connection is closed rightly; any other was closed to
        # keep the idle count under the cap, or to make room: the racy paths.
        closed_alive.extend(c for c in closing if not c.is_closed() and not c.has_expired())
        return closing

    monkeypatch.setattr(ConnectionPool, "_assign_requests_to_connections", counted)
    storage = FsspecStorage(
        f"webdav://.bucket/{uuid.uuid4().hex}",
        storage_options={**backend.storage_options, "headers": {"X-Test": uuid.uuid4().hex}},
    )
    for round_ in range(3):
        contents = [payload(3000 + i, seed=i + 100 * round_) for i in range(64)]
        await asyncio.gather(
            *(write(storage, data, ("blob", "stream")[i % 2]) for i, data in enumerate(contents))
        )
    assert closed_alive == []
