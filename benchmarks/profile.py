"""Profile one contender's operation with pyinstrument (wall clock, all threads' waits).

    python -m benchmarks.profile --backend s3 --contender fsspec_storage --op small_write

prints pyinstrument's text report of the timed part only (the emulator runs in another
process, so its CPU is not in the profile; run ``py-spy top --pid`` on it for that).
"""

from __future__ import annotations

import argparse
import asyncio
from dataclasses import replace

from pyinstrument import Profiler

from benchmarks.contenders import FAMILIES
from benchmarks.contenders.base import cleanup_fs
from benchmarks.envs import BACKENDS, Env, running_envs
from benchmarks.timing import consume, read_many, write_many
from benchmarks.workload import FULL, StreamSource, blob, small_objects

OPS = (
    "small_write",
    "small_read",
    "small_write_c1",
    "blob_write",
    "blob_read",
    "stream_write",
    "stream_read",
    "newloop",  # each 1 KiB write + read in its own asyncio.run (s3, gcs, azure)
)


async def _profile(env: Env, family_key: str, op: str, count: int) -> str:
    sizes = replace(FULL.for_backend(env.backend), small_count=count)
    family = FAMILIES[family_key](env, sizes.chunk_size)
    contender = await family.open(f"profile/{family_key}/{op}")
    warm = small_objects(4, 1024, seed=1)
    await read_many(contender, await write_many(contender, warm, 4), 4, 1024)
    objects = small_objects(sizes.small_count, sizes.small_size, seed=2)
    source = StreamSource(sizes.stream_size, sizes.chunk_size, seed=3)
    payload = blob(sizes.blob_size, seed=4) if op.startswith("blob") else None
    handles = []
    if op == "small_read":
        handles = await write_many(contender, objects, sizes.concurrency)
    if op == "stream_read":
        handles = [await contender.write_stream(source.stream())]
    if op == "blob_read":
        assert payload is not None
        handles = [await contender.write_blob(*payload)]
    profiler = Profiler(async_mode="enabled", interval=0.0005)
    with profiler:
        if op == "small_write":
            await write_many(contender, objects, sizes.concurrency)
        elif op == "small_write_c1":
            await write_many(contender, objects, 1)
        elif op == "small_read":
            await read_many(contender, handles, sizes.concurrency, sizes.small_size)
        elif op == "blob_write":
            assert payload is not None
            await contender.write_blob(*payload)
        elif op == "blob_read":
            data = await contender.read_blob(handles[0])
            assert len(data) == sizes.blob_size
        elif op == "stream_write":
            await contender.write_stream(source.stream())
        else:
            await consume(contender, handles[0], source)
    await family.cleanup(f"profile/{family_key}/{op}")
    await family.aclose()
    return profiler.output_text(unicode=False, color=False, show_all=False)


def _profile_new_loops(env: Env, family_key: str, count: int) -> str:
    """``count`` 1 KiB write + read pairs, each in its own ``asyncio.run`` (after one)."""
    from benchmarks import newloop

    contender = newloop.pattern(family_key, env, f"profile/{family_key}/newloop")
    objects = small_objects(count + 1, 1024, seed=5)
    profiler = Profiler(async_mode="disabled", interval=0.0005)
    newloop.new_loop_seconds(contender, objects, 600.0, profiler.start)
    profiler.stop()
    cleanup_fs(env, f"profile/{family_key}/newloop")
    return profiler.output_text(unicode=False, color=False, show_all=False)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__)
    parser.add_argument("--backend", choices=BACKENDS, required=True)
    parser.add_argument("--contender", choices=list(FAMILIES), default="fsspec_storage")
    parser.add_argument("--op", choices=OPS, required=True)
    parser.add_argument("--count", type=int, default=300, help="small objects to write/read")
    args = parser.parse_args()
    with running_envs([args.backend]) as envs:
        env = envs[args.backend]
        if args.op == "newloop":
            print(_profile_new_loops(env, args.contender, args.count))
        else:
            print(asyncio.run(_profile(env, args.contender, args.op, args.count)))


if __name__ == "__main__":
    main()
