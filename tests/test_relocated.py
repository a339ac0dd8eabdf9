"""Data that moves (README: Moving a lake): pointers recorded under one root are read
where the lake is now, through ``relocated=`` or a look under the storage's own root that
returns only bytes hashing to the pointer's; the command line's ``get --url``,
``verify --pointers FILE URL`` and ``--relocated``."""

from __future__ import annotations

import json
import logging
import os
import pickle
import uuid
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, digest_of, payload, read, write
from labox.builtin import StorableStream, StorableValue
from labox.common.exceptions import NoStorageData
from labox.core import BaseRecord, Registry, load_one, save_one
from sqlalchemy.ext.asyncio import async_sessionmaker, create_async_engine

from lakery_fsspec import FsspecStorage
from lakery_fsspec.cli import main

pytestmark = pytest.mark.backends("local", "memory", "s3")

HOW = ["blob", "stream"]
DATA = payload(3 * CHUNK + 5, seed=23)


def make(backend: BackendInfo, url: str | Path, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


def logged(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name.startswith("lakery_fsspec")]


def root_of(backend: BackendInfo, url: str) -> str:
    return make(backend, url).location.root


def move(backend: BackendInfo, old_url: str, new_url: str) -> None:
    """Move a whole lake, as a user would: a folder renamed, objects moved on a store."""
    old, new = root_of(backend, old_url), root_of(backend, new_url)
    if backend.name == "local":
        os.rename(old, new)
    else:
        fs = backend.fs()
        for path in fs.find(old):
            fs.mv(path, new + path[len(old) :])
    assert backend.fs().find(old) == []


async def moved_pointer(backend: BackendInfo, how: str, data: bytes = DATA) -> tuple[Any, str, str]:
    """A pointer written under one root whose lake then moved: ``(pointer, old, new)``."""
    old_url, new_url = backend.new_url(), backend.new_url()
    pointer = await write(make(backend, old_url), data, how)
    move(backend, old_url, new_url)
    return pointer, old_url, new_url


def spelled_otherwise(backend: BackendInfo, url: str) -> str:
    """Another spelling of the same root: another scheme, a trailing slash."""
    if backend.name == "s3":
        return url.replace("s3://", "s3a://", 1) + "/"
    if backend.name == "local":
        return url.removeprefix("file://") + "/"
    return url + "/"  # memory://x/ is /x


# --- through labox, a local folder moved --------------------------------------------------


async def _rows():
    for i in range(300):
        yield {"i": i}


@pytest.mark.backends("local")
@pytest.mark.parametrize("configured", [True, False], ids=["relocated", "fallback"])
async def test_a_moved_folder_loads_through_labox(
    backend: BackendInfo, tmp_path: Path, configured: bool, caplog: pytest.LogCaptureFixture
) -> None:
    root_a, moved = tmp_path / "rootA", tmp_path / "moved"
    engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'labox.db'}")
    await BaseRecord.create_all(engine)
    sessions = async_sessionmaker(engine, expire_on_commit=False)
    value = {"name": "moved", "n": [1, 2, 3]}
    try:
        writer = Registry(modules=["labox.builtin"], default_storage=FsspecStorage(root_a))
        async with sessions() as session:
            saved = await save_one(StorableValue(value), registry=writer, session=session)
            streamed = await save_one(StorableStream(_rows()), registry=writer, session=session)
        os.rename(root_a, moved)
        relocated = {str(root_a): str(moved)} if configured else None
        storage = FsspecStorage(moved, router=None, relocated=relocated)
        reader = Registry(modules=["labox.builtin"], default_storage=storage)
        caplog.set_level(logging.WARNING, "lakery_fsspec")
        for _ in range(2):
            async with sessions() as session, AsyncExitStack() as stack:
                loaded = await load_one(saved, StorableValue, registry=reader, session=session)
                loaded_stream = await load_one(
                    streamed, StorableStream, registry=reader, session=session, stack=stack
                )
                rows = [row async for row in loaded_stream.value_stream]
            assert loaded.value == value
            assert rows == [{"i": i} for i in range(300)]
    finally:
        await engine.dispose()
    told = [record.getMessage() for record in logged(caplog)]
    if configured:
        assert told == []
    else:  # once for the old root, naming where the objects were found
        [message] = told
        assert f"file://{root_a}" in message
        assert str(moved) in message
        assert "relocated=" in message


# --- relocated= ---------------------------------------------------------------------------


@pytest.mark.parametrize("how", HOW)
async def test_relocated_reads_from_the_new_root(backend: BackendInfo, how: str) -> None:
    pointer, old_url, new_url = await moved_pointer(backend, how)
    # A storage elsewhere: only the entry can lead it to the new root.
    elsewhere = make(backend, backend.new_url(), relocated={old_url: new_url})
    assert await read(elsewhere, pointer, how) == DATA
    assert await read(make(backend, new_url, relocated={old_url: new_url}), pointer, how) == DATA


@pytest.mark.parametrize("how", HOW)
async def test_relocated_compares_roots_canonically(backend: BackendInfo, how: str) -> None:
    pointer, old_url, new_url = await moved_pointer(backend, how)
    relocated = {spelled_otherwise(backend, old_url): spelled_otherwise(backend, new_url)}
    storage = make(backend, backend.new_url(), relocated=relocated)
    assert await read(storage, pointer, how) == DATA


async def test_a_lake_inside_a_moved_folder_follows_it(backend: BackendInfo) -> None:
    parent_old, parent_new = backend.new_url(), backend.new_url()
    pointer = await write(make(backend, f"{parent_old}/lake"), DATA, "blob")
    move(backend, parent_old, parent_new)
    storage = make(backend, backend.new_url(), relocated={parent_old: parent_new})
    assert await storage.read_data(pointer) == DATA
    assert (await storage.verify([pointer])).ok  # verify follows relocated too


async def test_relocated_survives_pickling(backend: BackendInfo) -> None:
    pointer, old_url, new_url = await moved_pointer(backend, "blob")
    storage = make(backend, backend.new_url(), relocated={old_url: new_url})
    assert await pickle.loads(pickle.dumps(storage)).read_data(pointer) == DATA


@pytest.mark.backends("local")
async def test_relocated_to_another_protocol_uses_its_read_options(
    backend: BackendInfo, tmp_path: Path
) -> None:
    memory = f"memory://{uuid.uuid4().hex}"
    pointer = await make(backend, tmp_path / "old").write_data(DATA, digest_of(DATA), {})
    await make(backend, memory).write_data(DATA, digest_of(DATA), {})
    storage = FsspecStorage(
        tmp_path / "other", relocated={tmp_path / "old": memory}, read_options={"memory": {}}
    )
    (tmp_path / "old").rename(tmp_path / "gone")
    assert await storage.read_data(pointer) == DATA
    with pytest.raises(ValueError, match=r"read_options=\{'memory'"):
        FsspecStorage(tmp_path / "other", relocated={tmp_path / "old": memory})


@pytest.mark.backends("local")
@pytest.mark.parametrize(
    ("relocated", "said"),
    [
        ({"nosuch://a/b": "/tmp/x"}, "'nosuch://a/b' -> '/tmp/x': Unknown fsspec protocol"),
        ({"/tmp/a": 3}, "3 is not a URL or a local path"),
        ({"/tmp/a": "/tmp/a/"}, "both name file:///tmp/a"),
        ({"/tmp/a": "/tmp/b", "file:///tmp/a/": "/tmp/c"}, "as another entry's is"),
        ({"memory://a": "/tmp/b"}, None),  # an old protocol need not be readable
        ({"/tmp/a": "memory://b"}, r"may not read 'memory' objects; add read_options="),
    ],
)
def test_bad_relocated_entries_are_refused_at_construction(
    backend: BackendInfo, relocated: dict[Any, Any], said: str | None
) -> None:
    if said is None:
        FsspecStorage("/tmp/lake", relocated=relocated)
        return
    with pytest.raises(ValueError, match="relocated entry") as raised:
        FsspecStorage("/tmp/lake", relocated=relocated)
    assert said in str(raised.value) or pytest.fail(str(raised.value))
    assert "Each entry maps" in str(raised.value)
    with pytest.raises(ValueError, match="must map old storage URLs"):
        FsspecStorage("/tmp/lake", relocated=["/tmp/a"])  # type: ignore[arg-type]


# --- without configuration: a verified look under the storage's own root ------------------


@pytest.mark.parametrize("how", HOW)
async def test_a_moved_object_is_found_under_the_storage_root(
    backend: BackendInfo, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "lakery_fsspec")
    old_url, new_url = backend.new_url(), backend.new_url()
    datas = [DATA, payload(100, seed=1)]
    pointers = [await write(make(backend, old_url), data, how) for data in datas]
    move(backend, old_url, new_url)
    storage = make(backend, new_url)
    for _ in range(2):
        for pointer, data in zip(pointers, datas, strict=True):
            assert await read(storage, pointer, how) == data
    [told] = logged(caplog)  # once per old root
    assert told.levelno == logging.WARNING
    assert f"{backend.protocol}://{root_of(backend, old_url)}" in told.getMessage()
    assert f"relocated={{'{backend.protocol}://{root_of(backend, old_url)}'" in told.getMessage()


async def read_into(handed: list[bytes], storage: FsspecStorage, pointer: Any, how: str) -> None:
    """Read as ``read`` does, keeping each chunk as it is handed out."""
    if how == "blob":
        handed.append(await storage.read_data(pointer))
    else:
        async for chunk in storage.read_data_stream(pointer):
            handed.append(chunk)


@pytest.mark.parametrize("how", HOW)
async def test_a_copy_with_other_bytes_is_not_returned(backend: BackendInfo, how: str) -> None:
    pointer, _, new_url = await moved_pointer(backend, how)
    at = f"{root_of(backend, new_url)}/{pointer['path']}"
    damaged = bytearray(DATA)
    damaged[-1] ^= 0xFF  # in the last chunk: nothing may be handed out before the check
    backend.overwrite(at, bytes(damaged))
    storage = make(backend, new_url)
    handed: list[bytes] = []
    with pytest.raises(NoStorageData) as raised:
        await read_into(handed, storage, pointer, how)
    assert handed == []
    said = str(raised.value)
    assert f"No object at {pointer['protocol']}://{pointer['root']}/{pointer['path']}" in said
    assert f"The object at {backend.protocol}://{at}" in said
    assert "is not returned" in said
    assert "is corrupt" in said


@pytest.mark.parametrize("how", HOW)
async def test_a_miss_everywhere_names_every_place(backend: BackendInfo, how: str) -> None:
    pointer, old_url, _ = await moved_pointer(backend, how)
    storage = make(backend, backend.new_url())
    with pytest.raises(NoStorageData) as raised:
        await read(storage, pointer, how)
    said = str(raised.value)
    assert f"{root_of(backend, old_url)}/{pointer['path']}" in said
    assert f"{storage.location.root}/{pointer['path']}" in said
    assert "under this storage's root" in said


@pytest.mark.parametrize("how", HOW)
async def test_a_pointer_without_hash_gets_no_fallback(backend: BackendInfo, how: str) -> None:
    pointer, _, new_url = await moved_pointer(backend, how)
    unhashed = {k: v for k, v in pointer.items() if k != "content_hash"}
    storage = make(backend, new_url)
    with pytest.raises(NoStorageData) as raised:
        await read(storage, unhashed, how)
    assert "under this storage's root" not in str(raised.value)
    foreign = {**unhashed, "protocol": "nosuchprotocol"}
    with pytest.raises(ValueError, match="read_options"):
        await read(storage, foreign, how)
    assert await read(storage, pointer, how) == DATA  # with its hash, the copy is found


@pytest.mark.parametrize("how", HOW)
async def test_a_foreign_pointer_reads_only_a_verified_copy_under_our_root(
    backend: BackendInfo, how: str
) -> None:
    storage = make(backend, backend.new_url())
    pointer = await write(storage, DATA, how)
    foreign_protocol = "memory" if backend.protocol != "memory" else "file"
    for protocol in (foreign_protocol, "nosuchprotocol"):
        foreign = {**pointer, "protocol": protocol, "root": "/somewhere/else"}
        assert await read(storage, foreign, how) == DATA
    # Not under our root: refused as before, never NoStorageData.
    elsewhere = make(backend, backend.new_url())
    with pytest.raises(ValueError, match="read_options") as raised:
        await read(elsewhere, {**pointer, "protocol": foreign_protocol}, how)
    assert not isinstance(raised.value, NoStorageData)
    assert "No copy at" in str(raised.value)
    # Under our root with other bytes: refused too.
    backend.overwrite(f"{pointer['root']}/{pointer['path']}", payload(len(DATA), seed=99))
    with pytest.raises(ValueError, match="is not returned"):
        await read(storage, {**pointer, "protocol": foreign_protocol}, how)


# --- the command line ---------------------------------------------------------------------


def flags(backend: BackendInfo, flag: str) -> list[str]:
    server = getattr(backend.server, "connect_options", {})
    args: list[str] = []
    for key, value in {**server, **backend.storage_options}.items():
        args += [flag, f"{key}={value if isinstance(value, str) else json.dumps(value)}"]
    return args


@pytest.fixture
def moved_lake(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> tuple[Path, str, str]:
    """A pointers file of a lake put with the command line, then moved: its path, and the
    old and new URL."""
    old_url, new_url = backend.new_url(), backend.new_url()
    names = []
    for index in range(3):
        name = tmp_path / f"file{index}.bin"
        name.write_bytes(payload(10_000 + index, seed=index))
        names.append(str(name))
    assert main(["put", old_url, *names, *flags(backend, "-o")]) == 0
    pointers = tmp_path / "pointers.jsonl"
    pointers.write_text(capsys.readouterr().out)
    move(backend, old_url, new_url)
    return pointers, old_url, new_url


def test_get_url_reads_from_the_given_root(
    backend: BackendInfo, moved_lake: tuple[Path, str, str], tmp_path: Path
) -> None:
    pointers, old_url, new_url = moved_lake
    line = pointers.read_text().splitlines()[1]
    out = tmp_path / "out.bin"
    assert main(["get", line, "--url", new_url, "-o", str(out), *flags(backend, "-s")]) == 0
    assert out.read_bytes() == (tmp_path / "file1.bin").read_bytes()
    out.unlink()
    relocated = f"{old_url}={new_url}"
    assert main(["get", line, "--relocated", relocated, "-o", str(out), *flags(backend, "-s")]) == 0
    assert out.read_bytes() == (tmp_path / "file1.bin").read_bytes()


def test_get_url_reads_the_given_root_even_where_the_old_one_is_still_there(
    backend: BackendInfo, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_url, new_url = backend.new_url(), backend.new_url()
    (tmp_path / "a.bin").write_bytes(b"original")
    assert main(["put", old_url, str(tmp_path / "a.bin"), *flags(backend, "-o")]) == 0
    line = capsys.readouterr().out.strip()
    pointer = json.loads(line)
    # The same path under the new root holds other bytes: get --url reads those (and
    # says they are not the object's).
    backend.overwrite(f"{root_of(backend, new_url)}/{pointer['path']}", b"imposter")
    out = tmp_path / "out.bin"
    assert main(["get", line, "--url", new_url, "-o", str(out), *flags(backend, "-s")]) == 1
    assert "is corrupt" in capsys.readouterr().err
    assert main(["get", line, "-o", str(out), *flags(backend, "-s")]) == 0
    assert out.read_bytes() == b"original"


def test_verify_pointers_with_a_url_reads_from_it(
    backend: BackendInfo, moved_lake: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    pointers, old_url, new_url = moved_lake
    common = ["verify", "--pointers", str(pointers), *flags(backend, "-o")]
    assert main([*common, new_url]) == 0
    assert "checked 3 object(s)" in capsys.readouterr().err
    assert main([*common, "--relocated", f"{old_url}={new_url}"]) == 0
    assert "OK: no problems" in capsys.readouterr().err
    assert main(common) == 1  # the old root: every object missing
    assert capsys.readouterr().out.count("missing: ") == 3


def test_get_of_a_moved_lake_says_how_to_read_it(
    backend: BackendInfo, moved_lake: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    pointers, _, _ = moved_lake
    line = pointers.read_text().splitlines()[0]
    assert main(["get", line, "-o", "-", *flags(backend, "-s")]) == 1
    err = capsys.readouterr().err
    assert "error: No object at" in err
    assert "--url NEW_URL, or --relocated OLD_URL=NEW_URL" in err


def test_relocated_flag_usage_errors(
    backend: BackendInfo, moved_lake: tuple[Path, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    pointers, old_url, new_url = moved_lake
    line = pointers.read_text().splitlines()[0]
    with pytest.raises(SystemExit) as exited:
        main(["get", line, "--relocated", "no-equals-sign"])
    assert exited.value.code == 2
    assert "expected OLD=NEW" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["get", line, "--relocated", f"nosuch://x={new_url}"])
    assert exited.value.code == 2
    assert "relocated entry 'nosuch://x'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["verify", new_url, "--relocated", f"{old_url}={new_url}"])
    assert exited.value.code == 2
    assert "give --pointers" in capsys.readouterr().err
