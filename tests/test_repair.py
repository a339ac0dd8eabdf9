"""Repair from a copy (README: Moving a lake): ``verify(repair_from=...)`` and
``lakery-fsspec verify --repair-from URL`` replace corrupt, truncated and missing objects
with their copies in another storage, only once a copy hashes right."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, payload, write

from lakery_fsspec import FsspecStorage, copy_lake
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("local", "memory", "s3")

DATA = [payload(CHUNK // 3, 31), payload(2 * CHUNK + 7, 32), payload(5000, 33)]


def make(backend: BackendInfo, url: str | Path, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


async def _damaged(backend: BackendInfo) -> tuple[FsspecStorage, FsspecStorage, list[Any]]:
    """A lake and its copy; then in the lake one object rots (same size), one is cut
    short and one is deleted."""
    lake, spare = make(backend, backend.new_url()), make(backend, backend.new_url())
    pointers = [await write(lake, data, "stream" if len(data) > CHUNK else "blob") for data in DATA]
    assert (await copy_lake(lake, spare)).copied == 3
    fs, root = backend.fs(), lake.location.root
    fs.pipe_file(f"{root}/{pointers[0]['path']}", b"Z" + DATA[0][1:])
    fs.pipe_file(f"{root}/{pointers[1]['path']}", DATA[1][:1000])
    fs.rm_file(f"{root}/{pointers[2]['path']}")
    return lake, spare, pointers


async def test_damaged_objects_are_replaced_from_a_copy(backend: BackendInfo) -> None:
    lake, spare, pointers = await _damaged(backend)
    found = await lake.verify(pointers, repair_from=spare)
    assert found.ok, found.problems
    assert sorted(p.kind for p in found.repaired) == ["corrupt", "missing", "truncated"]
    assert all("repaired from" in p.detail for p in found.repaired)
    for pointer, data in zip(pointers, DATA, strict=True):
        assert await lake.read_data(pointer) == data
    assert (await lake.verify(pointers)).ok
    assert (await lake.verify()).ok  # the walk too


async def test_a_copy_that_is_no_better_replaces_nothing(backend: BackendInfo) -> None:
    lake, spare, pointers = await _damaged(backend)
    fs = backend.fs()
    fs.pipe_file(f"{spare.location.root}/{pointers[0]['path']}", b"W" + DATA[0][1:])
    fs.rm_file(f"{spare.location.root}/{pointers[1]['path']}")
    found = await lake.verify(pointers, repair_from=spare)
    assert [p.kind for p in found.repaired] == ["missing"]
    assert sorted(p.kind for p in found.problems) == ["corrupt", "truncated"]
    assert all("not repaired: the copy at" in p.detail for p in found.problems)
    root = lake.location.root
    assert fs.cat_file(f"{root}/{pointers[0]['path']}") == b"Z" + DATA[0][1:]  # left alone
    assert fs.cat_file(f"{root}/{pointers[1]['path']}") == DATA[1][:1000]


def test_verify_repair_from_on_the_command_line(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, spare, pointers = asyncio.run(_damaged(backend))
    listed = tmp_path / "pointers.jsonl"
    listed.write_text("".join(json.dumps(p) + "\n" for p in pointers))
    options: list[str] = []
    for key, value in backend.storage_options.items():
        shown = value if isinstance(value, str) else json.dumps(value)
        options += ["-o", f"{key}={shown}", "--repair-option", f"{key}={shown}"]
    spare_url = f"{spare.location.protocol}://{spare.location.root}"
    args = ["verify", "--pointers", str(listed), "--repair-from", spare_url, *options]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert len([line for line in out.splitlines() if line.startswith("repaired: ")]) == 3
    assert "repaired 3 from" in err
    assert "OK: no problems" in err
    assert main(["verify", "--pointers", str(listed), *options]) == 0
