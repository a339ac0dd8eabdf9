"""Local blobs: written unnamed and linked into place where Linux allows, else through a
named temp file and a rename; either way complete or absent, with nothing left behind."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import digest_of, payload

from lakery_fsspec import FsspecStorage
from lakery_fsspec._backends import local_fast
from lakery_fsspec._backends.local import LocalBackend

pytestmark = pytest.mark.skipif(not local_fast.UNNAMED_FILES, reason="unnamed files are Linux's")


def _files(root: Path) -> list[Path]:
    """The stored objects (gc's freshness markers left out)."""
    fresh = root / ".lakery-fresh"
    return sorted(p for p in root.rglob("*") if p.is_file() and fresh not in p.parents)


@pytest.mark.parametrize("unnamed", [True, False])
async def test_a_blob_appears_once_complete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, unnamed: bool
) -> None:
    monkeypatch.setattr(LocalBackend, "unnamed_files", unnamed)
    storage = FsspecStorage(tmp_path)
    data = payload(100_000)
    pointer = await storage.write_data(data, digest_of(data), {})
    assert _files(tmp_path) == [tmp_path / pointer["path"]]  # no temp file left
    assert (tmp_path / pointer["path"]).read_bytes() == data
    assert await storage.write_data(data, digest_of(data), {}) == pointer


async def test_a_filesystem_without_unnamed_files_gets_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_open = os.open

    def without_unnamed_files(path: str, flags: int, *args: Any, **kwargs: Any) -> int:
        if flags & os.O_TMPFILE == os.O_TMPFILE:  # as such a filesystem answers
            if not os.path.isdir(path):
                raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
            raise OSError(errno.EOPNOTSUPP, "Operation not supported", path)
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", without_unnamed_files)
    storage = FsspecStorage(tmp_path)
    data = payload(1000)
    pointer = await storage.write_data(data, digest_of(data), {})  # into a new folder
    assert (tmp_path / pointer["path"]).read_bytes() == data
    assert _files(tmp_path) == [tmp_path / pointer["path"]]


async def test_a_refused_link_falls_back_to_a_rename(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refused(*args: object, **kwargs: object) -> None:
        raise PermissionError(errno.EPERM, "Operation not permitted")

    monkeypatch.setattr(os, "link", refused)
    storage = FsspecStorage(tmp_path)
    data = payload(1000)
    pointer = await storage.write_data(data, digest_of(data), {})
    assert _files(tmp_path) == [tmp_path / pointer["path"]]
    assert (tmp_path / pointer["path"]).read_bytes() == data


async def test_a_failed_write_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def disk_full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "link", disk_full)
    monkeypatch.setattr(os, "replace", disk_full)
    storage = FsspecStorage(tmp_path)
    data = payload(1000)
    with pytest.raises(OSError, match="No space left"):
        await storage.write_data(data, digest_of(data), {})
    assert _files(tmp_path) == []


async def test_a_writer_that_loses_the_race_keeps_the_first_object(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = FsspecStorage(tmp_path)
    data = payload(1000)
    pointer = await storage.write_data(data, digest_of(data), {})
    final = tmp_path / pointer["path"]
    inode = final.stat().st_ino
    monkeypatch.setattr(os.path, "exists", lambda path: False)  # raced past the check
    assert await storage.write_data(data, digest_of(data), {}) == pointer
    assert final.stat().st_ino == inode
    assert _files(tmp_path) == [final]
