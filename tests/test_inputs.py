"""Every refused input gets a ValueError that says what is wrong; accepted forms work."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import fsspec
import pytest
from helpers import digest_of

from lakery_fsspec import DEFAULT_TEMPLATE, FsspecStorage, PathTemplate


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("nope://bucket/lake", "Unknown fsspec protocol 'nope'"),
        ("", "non-empty"),
        ("s3://", "names no root folder or bucket"),
        ("memory://", "names no root folder or bucket"),
        ("simplecache::nope://x", "Unknown fsspec protocol 'nope'"),
    ],
)
def test_bad_urls(url: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FsspecStorage(url)


def test_missing_backend_package_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "s3fs", None)  # makes `import s3fs` fail for real
    registry = sys.modules["fsspec.registry"]._registry
    monkeypatch.delitem(registry, "s3", raising=False)
    with pytest.raises(ValueError, match=r"pip install 'lakery-fsspec\[s3\]'"):
        FsspecStorage("s3://bucket/lake")


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ("{content_hash}/{name}", r"references \{name\}"),
        ("{content_hash.upper}", r"references \{content_hash.upper\}"),
        ("{0}{content_hash}", r"references \{0\}"),
        ("{}{content_hash}", r"references \{\}"),
        ("{tags}/{content_hash}", r"references \{tags\}"),
        ("{tags[a][b]}/{content_hash}", r"references"),
        ("{content_type}/x", "does not include the whole"),
        ("{content_hash:.8}", "does not include the whole"),
        ("/{content_hash}", "absolute"),
        ("../{content_hash}", "'..' segment"),
        ("{content_hash}//x", "empty segment"),
        ("{content_encoding}/{content_hash}", "absolute"),
        ("{content_hash", "not a valid format string"),
        ("{content_size:.2}{content_hash}", "does not render"),
        ("{content_hash:{content_size}}", "nested field"),
    ],
)
def test_bad_templates_list_the_allowed_fields(template: str, message: str) -> None:
    with pytest.raises(ValueError, match=message) as error:
        FsspecStorage("memory://t", router=template)
    assert "{content_hash_algorithm}" in str(error.value)
    assert "{tags[NAME]}" in str(error.value)


def test_template_fields_and_specs() -> None:
    template = PathTemplate(
        "{content_hash_algorithm}/{content_type}/enc-{content_encoding}/{content_size:08d}/"
        "{tags[team]}/{content_hash:.2}/{content_hash}{extension}"
    )
    digest = digest_of(b"abc", "application/json", "gzip")
    path = template(digest, {"team": "t"})
    assert path == (
        f"sha256/application/json/enc-gzip/00000003/t/{digest['content_hash'][:2]}/"
        f"{digest['content_hash']}.json"
    )
    plain = digest_of(b"abc", "application/x-unknown-type")
    assert PathTemplate(DEFAULT_TEMPLATE)(plain, {}).endswith(plain["content_hash"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"chunk_size": 0}, "chunk_size"),
        ({"temp_prefix": "../tmp"}, "temp_prefix"),
        ({"router": 42}, "router must be"),
        ({"read_options": {"nope": {}}}, "Unknown fsspec protocol"),
    ],
)
def test_bad_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FsspecStorage("memory://x", **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"protocol": "s3", "root": "b"}', "'path' is missing"),
        ('{"protocol": 1, "root": "b", "path": "p"}', "'protocol' is missing or not a string"),
        ('{"protocol": "S3://", "root": "b", "path": "p"}', "not a protocol name"),
        ('{"protocol": "s3", "root": "", "path": "p"}', "'root' is empty"),
        ('{"protocol": "s3", "root": "b/../c", "path": "p"}', "'root' has a '..' segment"),
        ('{"protocol": "s3", "root": "b", "path": "/etc/passwd"}', "absolute"),
        ('{"protocol": "s3", "root": "b", "path": "a/../../x"}', "'..' segment"),
        ('{"protocol": "s3", "root": "b", "path": "a/%2e%2e/x"}', "decodes to"),
        ('{"protocol": "s3", "root": "b", "path": "s3://other/x"}', "://"),
    ],
)
def test_deserialize_refuses_anything_but_a_pointer(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        FsspecStorage("memory://x").deserialize_config(text)


def test_deserialize_tolerates_extra_keys() -> None:
    text = json.dumps({"protocol": "s3", "root": "b/lake", "path": "ab/cd", "future": [1]})
    assert FsspecStorage("memory://x").deserialize_config(text)["path"] == "ab/cd"


async def test_read_refuses_a_malformed_pointer_before_any_io() -> None:
    storage = FsspecStorage("memory://x")
    with pytest.raises(ValueError, match=r"'\.\.' segment"):
        await storage.read_data({"protocol": "memory", "root": "/x", "path": "../y"})


def test_local_paths_are_absolute_file_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("./lake", "lake", tmp_path / "lake", f"file://{tmp_path}/lake"):
        storage = FsspecStorage(url)  # type: ignore[arg-type]
        assert (storage.location.protocol, storage.location.root) == ("file", f"{tmp_path}/lake")


def test_construction_does_no_io(tmp_path: Path) -> None:
    FsspecStorage(tmp_path / "not-yet")
    FsspecStorage("s3://bucket/lake", storage_options={"endpoint_url": "http://127.0.0.1:9"})
    assert not (tmp_path / "not-yet").exists()


def test_repr_shows_location_not_options() -> None:
    storage = FsspecStorage("memory://lake", storage_options={"secret": "hunter2"}, router=None)
    assert repr(storage) == "FsspecStorage(memory:///lake, read-only)"


def test_chained_url_writes_to_target_and_records_its_protocol(tmp_path: Path) -> None:
    storage = FsspecStorage(
        "simplecache::memory://chained",
        storage_options={"simplecache": {"cache_storage": str(tmp_path / "cache")}},
    )

    async def main() -> None:
        pointer = await storage.write_data(b"cached", digest_of(b"cached"), {})
        assert pointer["protocol"] == "memory"
        assert pointer["root"] == "/chained"
        assert fsspec.filesystem("memory").cat_file(f"/chained/{pointer['path']}") == b"cached"
        assert await storage.read_data(pointer) == b"cached"
        assert os.listdir(tmp_path / "cache")  # the read went through the cache layer

    asyncio.run(main())
