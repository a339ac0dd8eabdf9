"""A write that finds an object of the wrong size at its path replaces it (issue 20).

Content addressing keeps what is already stored, but an object whose size differs from
its content's is damage, not "already stored": re-putting the original heals it. Rot that
keeps the size is for ``verify``.
"""

from __future__ import annotations

import pytest
from conftest import BackendInfo
from helpers import CHUNK, payload, read, write

from lakery_fsspec import FsspecStorage

HOW = ["blob", "stream"]
SIZE = 3 * CHUNK + 77


def make(backend: BackendInfo, url: str) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK)


@pytest.mark.parametrize("damage", ["truncated", "longer", "emptied"])
@pytest.mark.parametrize("how", HOW)
async def test_a_write_replaces_an_object_of_the_wrong_size(
    backend: BackendInfo, root_url: str, how: str, damage: str
) -> None:
    storage = make(backend, root_url)
    data = payload(SIZE, seed=len(damage))
    pointer = await write(storage, data, how)
    damaged = {"truncated": data[: SIZE // 2], "longer": data + b"x", "emptied": b""}[damage]
    backend.overwrite(f"{pointer['root']}/{pointer['path']}", damaged)
    assert await write(storage, data, how) == pointer
    assert await read(storage, pointer, "blob") == data


@pytest.mark.parametrize("how", HOW)
async def test_a_write_keeps_an_object_of_the_right_size(
    backend: BackendInfo, root_url: str, how: str
) -> None:
    # Same size, other bytes: content addressing trusts it; verify finds it.
    storage = make(backend, root_url)
    data = payload(SIZE, seed=9)
    pointer = await write(storage, data, how)
    rotted = bytes([data[0] ^ 0xFF]) + data[1:]
    backend.overwrite(f"{pointer['root']}/{pointer['path']}", rotted)
    assert await write(storage, data, how) == pointer
    assert await read(storage, pointer, "blob") == rotted
    assert [problem.kind for problem in (await storage.verify()).problems] == ["corrupt"]
