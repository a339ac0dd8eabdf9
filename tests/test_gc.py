"""Garbage collection against labox's records: unreferenced objects are quarantined in a
trash folder, deleted a grace period later, and put back by a read that misses them; a
write that finds its content stored leaves a marker the sweep respects; runs that look
wrong are refused. (The race harness is test_gc_race.py.)"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from gcdb import (
    create_db,
    db_url,
    drop,
    garbage,
    listing,
    load_all,
    pointers,
    save,
    value,
)
from helpers import CHUNK, Stream, chunked, payload
from test_cli import AuthS3, auth_s3  # noqa: F401 - a fixture

from lakery_fsspec import (
    FsspecStorage,
    GCRefusedError,
    collect_garbage,
    copy_lake,
    restore_trash_run,
    trash_runs,
)
from lakery_fsspec._trash import marker_name
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("local", "s3", "gcs", "azure", "sftp")

WEEK = 7 * 86_400.0


def make(backend: BackendInfo, url: str, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


def options(backend: BackendInfo) -> list[str]:
    args: list[str] = []
    for key, option in backend.storage_options.items():
        args += ["-o", f"{key}={option if isinstance(option, str) else json.dumps(option)}"]
    return args


async def _lake(backend: BackendInfo, tmp_path: Path, url: str) -> tuple[str, FsspecStorage]:
    """Three values saved through labox, two garbage objects beside them."""
    db = db_url(tmp_path)
    await create_db(db)
    storage = make(backend, url)
    await save(db, storage, [value(n) for n in range(3)])
    await garbage(storage, payload(3000, 1))
    await garbage(storage, payload(5000, 2))
    return db, storage


def test_sweep_quarantines_then_deletes(
    backend: BackendInfo, tmp_path: Path, root_url: str
) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    referenced = sorted(p["path"] for p in asyncio.run(pointers(db)))
    result = asyncio.run(collect_garbage(storage, [db], grace=0))
    assert (result.listed.count, result.referenced.count) == (5, 3)
    assert (result.quarantined.count, result.quarantined.bytes) == (2, 8000)
    assert result.run is not None
    where = listing(backend, storage)
    assert where["lake"] == referenced
    assert sorted(p.split("/", 1)[1] for p in where["trash"] if "/" in p) != []
    assert len([p for p in where["trash"] if p.startswith(result.run + "/")]) == 2
    assert asyncio.run(load_all(db, storage)) == [value(n) for n in range(3)]
    # Kept a week: a second run deletes nothing; with no trash grace, the trash goes.
    again = asyncio.run(collect_garbage(storage, [db], grace=0))
    assert (again.quarantined.count, again.deleted.count) == (0, 0)
    last = asyncio.run(collect_garbage(storage, [db], grace=0, trash_grace=0))
    assert (last.deleted.count, last.deleted.bytes) == (2, 8000)
    assert listing(backend, storage) == {"lake": referenced, "trash": [], "fresh": []}
    if backend.name == "local":  # an emptied run leaves no folders behind either
        trash = Path(storage.location.root) / ".lakery-trash"
        assert [p for p in trash.rglob("*") if p.is_dir()] == []


def test_grace_keeps_young_objects(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    result = asyncio.run(collect_garbage(storage, [db]))  # 7 days
    assert (result.too_young.count, result.quarantined.count) == (2, 0)
    assert len(listing(backend, storage)["lake"]) == 5


def test_a_dedup_hit_freshens(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    """An old unreferenced object that a write (a blob, a stream) just found stored is not
    swept while its marker is younger than the grace period; the sweep removes the marker
    once it is old."""
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    time.sleep(3.5)  # servers date their answers in whole seconds
    blob = asyncio.run(garbage(storage, payload(3000, 1)))
    stream = Stream(chunked(payload(5000, 2), 1000))
    streamed = asyncio.run(storage.write_data_stream(stream, stream.get_digest, {}))
    markers = sorted(f".lakery-fresh/{marker_name(p['path'])}" for p in (blob, streamed))
    assert listing(backend, storage)["fresh"] == markers
    result = asyncio.run(collect_garbage(storage, [db], grace=2))
    assert (result.quarantined.count, result.too_young.count) == (0, 2)
    time.sleep(3.5)
    result = asyncio.run(collect_garbage(storage, [db], grace=2))
    assert (result.quarantined.count, result.markers_removed) == (2, 2)
    assert listing(backend, storage)["fresh"] == []


@pytest.mark.parametrize("how", ["blob", "stream"])
def test_a_read_puts_back_what_was_quarantined(
    backend: BackendInfo, tmp_path: Path, root_url: str, how: str
) -> None:
    """A record committed after the sweep read the references (a late writer) points at
    a quarantined object: the read finds it in the trash and puts it back; a read-only
    storage reads it there."""
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    other = db_url(tmp_path, "other.db")
    asyncio.run(create_db(other))
    asyncio.run(save(other, storage, [value(9)]))
    asyncio.run(collect_garbage(storage, [other], grace=0, force=True))  # not db's records
    assert listing(backend, storage)["lake"] == [asyncio.run(pointers(other))[0]["path"]]
    reader = make(backend, root_url, router=None)
    assert asyncio.run(load_all(db, reader)) == [value(n) for n in range(3)]
    assert len(listing(backend, storage)["lake"]) == 1  # read-only: left in the trash
    if how == "blob":
        assert asyncio.run(load_all(db, storage)) == [value(n) for n in range(3)]
    else:
        for pointer in asyncio.run(pointers(db)):
            assert asyncio.run(_streamed(storage, pointer))
    assert len(listing(backend, storage)["lake"]) == 4
    # The next sweep against both databases keeps them, and removes only the garbage.
    result = asyncio.run(collect_garbage(storage, [db, other], grace=0, trash_grace=0))
    assert (result.deleted.count, result.referenced.count) == (2, 4)


async def _streamed(storage: FsspecStorage, pointer: Any) -> bytes:
    return b"".join([chunk async for chunk in storage.read_data_stream(pointer)])


def test_expiry_puts_back_what_is_referenced_again(
    backend: BackendInfo, tmp_path: Path, root_url: str
) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    other = db_url(tmp_path, "other.db")
    asyncio.run(create_db(other))
    asyncio.run(save(other, storage, [value(9)]))
    asyncio.run(collect_garbage(storage, [other], grace=0, force=True))
    result = asyncio.run(collect_garbage(storage, [db, other], grace=0, trash_grace=0))
    assert (result.restored.count, result.deleted.count) == (3, 2)
    assert len(listing(backend, storage)["lake"]) == 4
    assert listing(backend, storage)["trash"] == []


def test_refusals(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    empty = db_url(tmp_path, "empty.db")
    asyncio.run(create_db(empty))
    with pytest.raises(GCRefusedError, match="no labox record"):
        asyncio.run(collect_garbage(storage, [empty], grace=0))
    assert len(listing(backend, storage)["lake"]) == 5
    # Ten records, two objects lost: more than a tenth point nowhere.
    asyncio.run(save(db, storage, [value(n) for n in range(3, 10)]))
    fs = backend.fs()
    lost = [p["path"] for p in asyncio.run(pointers(db))][:2]
    for path in lost:
        fs.rm_file(f"{storage.location.root}/{path}")
    with pytest.raises(GCRefusedError, match="2 of the 10") as refused:
        asyncio.run(collect_garbage(storage, [db], grace=0))
    assert "--force" in refused.value.fix
    result = asyncio.run(collect_garbage(storage, [db], grace=0, force=True))
    assert (result.missing, result.quarantined.count) == (2, 2)


def test_runs_and_restore(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    result = asyncio.run(collect_garbage(storage, [db], grace=0))
    runs = asyncio.run(trash_runs(storage))
    assert [run.run for run in runs] == [result.run]
    assert result.run
    restored, there = asyncio.run(restore_trash_run(storage, result.run))
    assert (restored.count, there.count) == (2, 0)
    assert len(listing(backend, storage)["lake"]) == 5
    assert asyncio.run(trash_runs(storage)) == []


def test_dry_run_moves_nothing(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    seen: list[tuple[str, str, int | None]] = []
    result = asyncio.run(
        collect_garbage(storage, [db], grace=0, dry_run=True, on_object=lambda *a: seen.append(a))
    )
    assert sorted(size for _, _, size in seen) == [3000, 5000]
    assert {action for action, _, _ in seen} == {"quarantine"}
    assert (result.quarantined.count, result.run) == (2, None)
    assert len(listing(backend, storage)["lake"]) == 5


def test_verify_and_copy_skip_the_trash(
    backend: BackendInfo, tmp_path: Path, root_url: str
) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    asyncio.run(collect_garbage(storage, [db], grace=0))
    asyncio.run(save(db, storage, [value(3)]))
    asyncio.run(save(db, storage, [value(3)]))  # a dedup hit: a marker
    assert listing(backend, storage)["fresh"]
    checked = asyncio.run(storage.verify())
    assert checked.ok
    assert checked.checked == 4  # the lake's, not the trash's nor the marker
    copy = tmp_path / "copy"
    copied = asyncio.run(copy_lake(storage, FsspecStorage(copy)))
    assert (copied.copied, copied.problems) == (4, [])
    assert (
        sorted(str(p.relative_to(copy)) for p in copy.rglob("*") if p.is_file())
        == (listing(backend, storage)["lake"])
    )


def test_cli(
    backend: BackendInfo, tmp_path: Path, root_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    args = ["gc", root_url, "--db", db, *options(backend)]
    assert main([*args, "--grace", "0", "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2
    assert all(line.startswith("would quarantine\t") for line in out.splitlines())
    assert "would quarantine 2 object(s)" in err
    assert "would delete 0 temp object(s)" in err  # and what gc does without --db
    assert main([*args, "--grace", "0"]) == 0
    out, err = capsys.readouterr()
    assert "quarantined 2 object(s)" in err
    assert main([*args, "--runs"]) == 0
    out, _ = capsys.readouterr()
    (run,) = [line.split("\t")[0] for line in out.splitlines()]
    assert main([*args, "--restore", run]) == 0
    assert "restored 2 object(s)" in capsys.readouterr().err
    assert main([*args, "--restore", run]) == 1  # gone: nothing to put back
    assert "gc --runs" in capsys.readouterr().err
    empty = db_url(tmp_path, "empty.db")
    asyncio.run(create_db(empty))
    assert main(["gc", root_url, "--db", empty, "--grace", "0", *options(backend)]) == 1
    assert "--force" in capsys.readouterr().err
    assert len(listing(backend, storage)["lake"]) == 5
    forced = ["gc", root_url, "--db", empty, "--grace", "0", "--force", *options(backend)]
    assert main(forced) == 0
    assert "quarantined 5 object(s)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["gc", root_url, "--grace", "0", *options(backend)])  # --grace needs --db
    assert usage.value.code == 2
    assert "--db DATABASE_URL" in capsys.readouterr().err


def test_dropped_records_are_swept(backend: BackendInfo, tmp_path: Path, root_url: str) -> None:
    db, storage = asyncio.run(_lake(backend, tmp_path, root_url))
    ids = asyncio.run(save(db, storage, [value(7)]))
    asyncio.run(drop(db, ids))
    result = asyncio.run(collect_garbage(storage, [db], grace=0))
    assert result.quarantined.count == 3


@pytest.mark.backends("s3")
@pytest.mark.moto("an authenticating moto server with IAM policies")
def test_a_reader_that_may_not_write_reads_in_the_trash(
    backend: BackendInfo,
    tmp_path: Path,
    auth_s3: AuthS3,  # noqa: F811 - the fixture imported above
) -> None:
    """A read that misses, with credentials that may read and list but not write, cannot
    put the object back: it reads it in the trash."""
    url = f"s3://{auth_s3.bucket}/{uuid.uuid4().hex}"

    def as_user(user: str) -> FsspecStorage:
        key, secret = auth_s3.keys[user]
        options = {"endpoint_url": auth_s3.endpoint, "key": key, "secret": secret}
        return FsspecStorage(url, storage_options=options, chunk_size=CHUNK)

    admin = as_user("admin")
    pointer = asyncio.run(garbage(admin, payload(3000, 5)))
    empty = db_url(tmp_path, "empty.db")
    asyncio.run(create_db(empty))
    result = asyncio.run(collect_garbage(admin, [empty], grace=0, force=True))
    assert result.quarantined.count == 1
    assert asyncio.run(as_user("reader").read_data(pointer)) == payload(3000, 5)
    assert asyncio.run(trash_runs(admin))  # still there: nothing was put back
