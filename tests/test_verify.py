"""verify: objects damaged behind the storage's back are found, each with its kind, and
nothing else; sampling picks the same objects for the same seed; a run resumes.

Damage is done through the backend's own filesystem (``backend.fs()``), never through the
storage: one object rewritten with a byte flipped, one cut short, one deleted.
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest
from conftest import BackendInfo
from helpers import CHUNK, Stream, chunked, digest_of, payload

from lakery_fsspec import FsspecPointer, FsspecStorage, StorageUnavailableError
from lakery_fsspec._verify import Checked, Verification, walk_key

SIZED = "{tags[team]}/{content_hash:.2}/{content_hash}-{content_size}{extension}"
"""Records the size in the path, and puts objects two or three folders deep ("b/c")."""
TEAMS = ("a", "b/c")


def make(backend: BackendInfo, url: str, **kwargs: Any) -> FsspecStorage:
    return FsspecStorage(url, storage_options=backend.storage_options, chunk_size=CHUNK, **kwargs)


async def fill(
    storage: FsspecStorage, count: int, size: int = 2 * CHUNK + 7
) -> list[FsspecPointer]:
    """``count`` objects of different contents (every other one streamed; the first
    spans several chunks), spread over the template's sub-folders."""
    tags_for = [{"team": TEAMS[index % 2]} for index in range(count)]
    pointers: list[FsspecPointer] = []
    for index, tags in enumerate(tags_for):
        data = payload(size if index == 0 else 1000 + index, seed=index)
        if index % 2:
            stream = Stream(chunked(data, 4000), content_type="application/json")
            pointers.append(await storage.write_data_stream(stream, stream.get_digest, tags))
        else:
            digest = digest_of(data, "application/json")
            pointers.append(await storage.write_data(data, digest, tags))
    return pointers


def where(pointer: FsspecPointer) -> str:
    return f"{pointer['root']}/{pointer['path']}"


def url(pointer: FsspecPointer) -> str:
    return f"{pointer['protocol']}://{where(pointer)}"


def flip(backend: BackendInfo, pointer: FsspecPointer) -> None:
    """Rewrite the object with one byte changed: same size, other hash."""
    fs = backend.fs()
    data = bytearray(fs.cat_file(where(pointer)))
    data[len(data) // 2] ^= 0x01
    fs.pipe_file(where(pointer), bytes(data))


def cut(backend: BackendInfo, pointer: FsspecPointer) -> None:
    """Rewrite the object without its last bytes."""
    fs = backend.fs()
    data = fs.cat_file(where(pointer))
    fs.pipe_file(where(pointer), data[: len(data) // 2])


def delete(backend: BackendInfo, pointer: FsspecPointer) -> None:
    backend.fs().rm_file(where(pointer))


def found(result: Verification) -> set[tuple[str, str]]:
    return {(problem.kind, problem.url) for problem in result.problems}


# --- walking the storage ------------------------------------------------------------------


async def test_walk_finds_corrupt_and_truncated_objects(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url, router=SIZED)
    pointers = await fill(storage, 6)
    assert {p["path"].split("/")[0] for p in pointers} == {"a", "b"}  # "b/c": two deep
    flip(backend, pointers[0])
    cut(backend, pointers[1])
    delete(backend, pointers[2])
    fs = backend.fs()
    root = storage.location.root
    fs.pipe_file(f"{root}/.lakery-tmp/0000000000000-{'0' * 32}", b"a stream being written")
    fs.pipe_file(f"{root}/notes.txt", b"not an object of this storage")

    result = await storage.verify()

    assert found(result) == {("corrupt", url(pointers[0])), ("truncated", url(pointers[1]))}
    assert result.checked == 5  # the deleted one is simply not there to walk
    assert result.unmatched == 1  # notes.txt; the temp object is not even listed
    assert result.unhashed == result.skipped == result.sampled_out == 0
    [corrupt] = result.of_kind("corrupt")
    assert "sha256" in corrupt.detail
    assert pointers[0]["content_hash"] in corrupt.detail  # type: ignore[operator]
    [truncated] = result.of_kind("truncated")
    size = pointers[1]["content_size"]  # type: ignore[typeddict-item]
    assert f"{size // 2} bytes are stored of the {size} its path records" in truncated.detail
    assert not result.ok
    assert result.counts() == {"corrupt": 1, "truncated": 1, "missing": 0, "unreadable": 0}


async def test_walk_without_sizes_calls_a_short_object_corrupt(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)  # the default template records no size
    pointers = await fill(storage, 4)
    flip(backend, pointers[0])
    cut(backend, pointers[1])
    result = await storage.verify()
    assert found(result) == {("corrupt", url(pointers[0])), ("corrupt", url(pointers[1]))}
    short = next(p for p in result.problems if p.url == url(pointers[1]))
    assert "it may be truncated" in short.detail
    assert result.checked == 4


async def test_intact_objects_pass_and_are_read_in_chunks(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url, router=SIZED)
    size = 5 * CHUNK + 123
    pointers = await fill(storage, 5, size=size)
    chunks: list[int] = []
    seen: list[Checked] = []
    result = await storage.verify(on_bytes=chunks.append, on_object=seen.append)
    assert result.ok
    assert result.problems == []
    total = sum(p["content_size"] for p in pointers)  # type: ignore[misc]
    assert result.checked == 5
    assert result.bytes == sum(chunks) == total
    # Never a whole object at once: the big one came in chunks of at most chunk_size.
    assert max(chunks) <= CHUNK
    assert len(chunks) >= -(-size // CHUNK) + 4
    assert sorted(c.url for c in seen) == sorted(url(p) for p in pointers)
    assert all(c.hashed and c.problem is None for c in seen)
    assert {c.path for c in seen} == {p["path"] for p in pointers}


async def test_a_fresh_storage_has_nothing_to_check(backend: BackendInfo, root_url: str) -> None:
    result = await make(backend, root_url).verify()
    assert result == Verification()


@pytest.mark.backends("s3", "gcs", "azure")
async def test_a_missing_bucket_is_an_error_not_an_empty_storage(backend: BackendInfo) -> None:
    storage = make(backend, f"{backend.schemes[0]}://no-such-bucket-for-verify/lake")
    with pytest.raises(FileNotFoundError):
        await storage.verify()


async def test_other_algorithms_named_by_the_template(backend: BackendInfo, root_url: str) -> None:
    import hashlib

    storage = make(backend, root_url, router="{content_hash_algorithm}/{content_hash}")
    pointers = []
    for index, algorithm in enumerate(("md5", "sha256", "sha512", "blake2b")):
        data = payload(3000, seed=index)
        digest = {
            **digest_of(data),
            "content_hash": hashlib.new(algorithm, data).hexdigest(),
            "content_hash_algorithm": algorithm,
        }
        pointers.append(await storage.write_data(data, digest, {}))  # type: ignore[arg-type]
    assert (await storage.verify()).ok
    flip(backend, pointers[0])
    flip(backend, pointers[3])
    result = await storage.verify()
    assert found(result) == {("corrupt", url(pointers[0])), ("corrupt", url(pointers[3]))}
    assert {p.detail.split()[1] for p in result.problems} == {"md5", "blake2b"}


# --- pointers -----------------------------------------------------------------------------


async def test_pointers_find_missing_truncated_and_corrupt_objects(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    pointers = await fill(storage, 6)
    flip(backend, pointers[0])
    cut(backend, pointers[1])
    delete(backend, pointers[2])

    result = await storage.verify(pointers)

    assert found(result) == {
        ("corrupt", url(pointers[0])),
        ("truncated", url(pointers[1])),
        ("missing", url(pointers[2])),
    }
    assert result.checked == 6
    assert result.unhashed == 0
    [missing] = result.of_kind("missing")
    assert "deleted, or never written" in missing.detail
    [truncated] = result.of_kind("truncated")
    assert "its pointer records" in truncated.detail


async def test_pointers_from_an_async_source_and_without_hashes(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    pointers = await fill(storage, 3)
    flip(backend, pointers[1])
    # Older pointers recorded only where the object is: the path still holds the hash.
    legacy: list[FsspecPointer] = [
        {"protocol": p["protocol"], "root": p["root"], "path": p["path"]} for p in pointers
    ]

    async def given() -> AsyncIterator[FsspecPointer]:
        for pointer in legacy:
            yield pointer

    result = await storage.verify(given())
    assert found(result) == {("corrupt", url(pointers[1]))}
    assert "its path records" in result.problems[0].detail
    # With a callable router, nothing says what the hash should be: only reads are checked.
    plain = make(backend, root_url, router=lambda digest, tags: digest["content_hash"])
    result = await plain.verify(legacy)
    assert result.ok
    assert result.checked == result.unhashed == 3


async def test_a_refused_pointer_is_reported_unreadable(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    [pointer] = await fill(storage, 1)
    foreign: FsspecPointer = {
        **pointer,
        "protocol": "file" if backend.name == "memory" else "memory",
    }
    result = await storage.verify([pointer, foreign])
    assert result.checked == 2
    [problem] = result.problems
    assert problem.kind == "unreadable"
    assert problem.detail.startswith("refused: ")
    assert "read_options" in problem.detail


# --- read errors --------------------------------------------------------------------------


@pytest.mark.backends("local")
async def test_local_read_errors_are_unreadable(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    await fill(storage, 1)
    root = storage.location.root
    os.makedirs(f"{root}/ab")
    os.makedirs(f"{root}/cd")
    loop_path = f"{root}/ab/{'ab' * 32}.json"  # paths the template makes
    os.symlink(loop_path, loop_path)  # a link to itself: ELOOP when opened
    fifo_path = f"{root}/cd/{'cd' * 32}.json"
    os.mkfifo(fifo_path)  # opening it would wait for a writer forever
    result = await asyncio.wait_for(storage.verify(), timeout=30)
    assert {(p.kind, p.url) for p in result.problems} == {
        ("unreadable", f"file://{loop_path}"),
        ("unreadable", f"file://{fifo_path}"),
    }
    details = {p.url: p.detail for p in result.problems}
    assert os.strerror(errno.ELOOP) in details[f"file://{loop_path}"]
    assert "not a regular file" in details[f"file://{fifo_path}"]
    assert result.checked == 3


@pytest.mark.backends("s3", "azure")
@pytest.mark.moto("moto refuses reads of GLACIER objects; SeaweedFS has no archive tier")
async def test_archived_objects_are_unreadable(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    pointers = await fill(storage, 2)
    key = backend.key(url(pointers[0]))
    server: Any = backend.server
    if backend.name == "s3":  # moved to Glacier by a lifecycle rule, say
        source = {"Bucket": backend.root, "Key": key}
        server.client.copy_object(
            Bucket=backend.root, Key=key, CopySource=source, StorageClass="GLACIER"
        )
        said = "not valid for the object's storage class"
    else:
        server.container.get_blob_client(key).set_standard_blob_tier("Archive")
        said = "This operation is not permitted on an archived blob."
    for result in (await storage.verify(), await storage.verify(pointers)):
        [problem] = result.problems
        assert (problem.kind, problem.url) == ("unreadable", url(pointers[0]))
        assert problem.detail.startswith("reading it failed after 0 bytes: ")
        assert said in problem.detail
        assert "\n" not in problem.detail
        assert result.checked == 2


@pytest.mark.backends("s3")
async def test_an_unreachable_storage_stops_the_run(backend: BackendInfo, root_url: str) -> None:
    from servers import HOST, free_port

    options = {
        **backend.storage_options,
        "endpoint_url": f"http://{HOST}:{free_port()}",
        "config_kwargs": {"retries": {"max_attempts": 1}},
    }
    storage = FsspecStorage(root_url, storage_options=options, timeout=10)
    with pytest.raises(StorageUnavailableError):
        await storage.verify()


# --- sampling, resuming, concurrency ------------------------------------------------------


async def test_sampling_is_seeded_and_repeatable(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, root_url)
    pointers = await fill(storage, 24)

    async def sample(seed: int, given: list[FsspecPointer] | None = None) -> set[str]:
        seen: list[Checked] = []
        result = await storage.verify(given, sample=0.5, seed=seed, on_object=seen.append)
        assert result.checked + result.sampled_out == 24
        assert result.checked == len(seen)
        return {c.url for c in seen}

    first = await sample(1)
    assert 4 <= len(first) <= 20
    assert await sample(1) == first  # the same seed picks the same objects
    assert await sample(2) != first
    assert await sample(1, pointers) == first  # whether walked or pointed at
    assert await sample(1, pointers[::-1]) == first  # in any order
    everything = await storage.verify(sample=1.0)
    assert everything.checked == 24

    damaged = [p for p in pointers if url(p) in first][:1] + [
        p for p in pointers if url(p) not in first
    ][:1]
    for pointer in damaged:
        flip(backend, pointer)
    result = await storage.verify(sample=0.5, seed=1)
    assert found(result) == {("corrupt", url(damaged[0]))}  # the other is not in the sample


class Stop(Exception):
    """Interrupts a run from its on_object callback."""


async def test_an_interrupted_walk_resumes_where_it_stopped(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url, router=SIZED)
    pointers = await fill(storage, 12)
    flip(backend, pointers[0])
    flip(backend, pointers[11])
    seen: list[Checked] = []

    def stop_after_five(checked: Checked) -> None:
        seen.append(checked)
        if len(seen) == 5:
            raise Stop

    with pytest.raises(Stop):
        await storage.verify(concurrency=3, on_object=stop_after_five)
    after = seen[-1].after
    assert after is not None
    beyond = {c.url for c in seen if walk_key(c.path) > walk_key(after)}
    rest: list[Checked] = []
    result = await storage.verify(after=after, skip=beyond, on_object=rest.append)
    first_urls, rest_urls = {c.url for c in seen}, {c.url for c in rest}
    assert not first_urls & rest_urls  # nothing checked twice
    assert first_urls | rest_urls == {url(p) for p in pointers}  # nothing left out
    assert result.skipped == len(beyond)
    problems = {c.url for c in seen + rest if c.problem is not None}
    assert problems == {url(pointers[0]), url(pointers[11])}


async def test_interrupted_pointers_resume_where_they_stopped(
    backend: BackendInfo, root_url: str
) -> None:
    storage = make(backend, root_url)
    pointers = await fill(storage, 10)
    delete(backend, pointers[9])
    seen: list[Checked] = []

    def stop_after_four(checked: Checked) -> None:
        seen.append(checked)
        if len(seen) == 4:
            raise Stop

    with pytest.raises(Stop):
        await storage.verify(pointers, concurrency=3, on_object=stop_after_four)
    handled = seen[-1].handled
    assert 1 <= handled <= 4
    beyond = {c.url for c in seen if c.index >= handled}
    rest: list[Checked] = []
    result = await storage.verify(pointers[handled:], skip=beyond, on_object=rest.append)
    first_urls, rest_urls = {c.url for c in seen}, {c.url for c in rest}
    assert not first_urls & rest_urls
    assert first_urls | rest_urls == {url(p) for p in pointers}
    assert found(result) == {("missing", url(pointers[9]))}


async def test_concurrency_is_bounded(
    backend: BackendInfo, root_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = make(backend, root_url)
    await fill(storage, 12)
    target, _ = await storage._target("verify")
    reading = most = 0
    original = target.iter_chunks

    async def counted(path: str, chunk_size: int) -> AsyncIterator[bytes]:
        nonlocal reading, most
        reading += 1
        most = max(most, reading)
        try:
            await asyncio.sleep(0.02)  # long enough for every free slot to fill
            async for chunk in original(path, chunk_size):
                yield chunk
        finally:
            reading -= 1

    monkeypatch.setattr(target, "iter_chunks", counted)
    for concurrency in (1, 3):
        most = 0
        result = await storage.verify(concurrency=concurrency)
        assert result.checked == 12
        assert most == concurrency
    assert reading == 0


# --- refusals -----------------------------------------------------------------------------


async def test_a_walk_needs_a_template(backend: BackendInfo, root_url: str) -> None:
    for router in (lambda digest, tags: digest["content_hash"], None):
        storage = make(backend, root_url, router=router)
        with pytest.raises(ValueError, match="cannot tell the hash of an object from its path"):
            await storage.verify()
    padded = make(backend, root_url, router="{content_hash:.64}/{content_hash:>70}")
    with pytest.raises(ValueError, match="Pass pointers to verify"):
        await padded.verify()
    assert (await padded.verify(await fill(padded, 2))).checked == 2  # pointers do


@pytest.mark.backends("memory")
@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"sample": 0}, "sample must be a fraction"),
        ({"sample": 1.5}, "sample must be a fraction"),
        ({"sample": True}, "sample must be a fraction"),
        ({"concurrency": 0}, "concurrency must be a positive number"),
        ({"concurrency": 2.5}, "concurrency must be a positive number"),
    ],
)
async def test_bad_options_are_refused(
    backend: BackendInfo, root_url: str, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        await make(backend, root_url).verify(**options)


@pytest.mark.backends("memory")
async def test_after_is_for_walks(backend: BackendInfo, root_url: str) -> None:
    with pytest.raises(ValueError, match="after= resumes a walk"):
        await make(backend, root_url).verify([], after="ab/cd")


async def test_a_cache_layer_is_not_what_is_verified(backend: BackendInfo, root_url: str) -> None:
    storage = make(backend, f"simplecache::{root_url}")
    pointers = await fill(storage, 2)
    intact = await storage.read_data(pointers[0])  # now in the cache
    flip(backend, pointers[0])
    assert await storage.read_data(pointers[0]) == intact  # reads would not tell
    for result in (await storage.verify(), await storage.verify(pointers)):
        assert found(result) == {("corrupt", url(pointers[0]))}
