"""Count the HTTP requests each contender sends per operation (s3, gcs, azure).

    python -m benchmarks.requests --backends s3,gcs,azure

s3fs (aiobotocore), gcsfs and adlfs (azure-core) all send through aiohttp, so wrapping
``aiohttp.ClientSession._request`` sees every request, whichever thread or loop sends it.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp

from benchmarks.contenders import FAMILIES
from benchmarks.envs import Env, running_envs
from benchmarks.timing import consume, read_many, write_many
from benchmarks.workload import MiB, StreamSource, small_objects

_COUNTS: collections.Counter[str] = collections.Counter()
_original = aiohttp.ClientSession._request  # pyright: ignore[reportPrivateUsage]


async def _counting(self: aiohttp.ClientSession, method: str, url: Any, **kwargs: Any) -> Any:
    _COUNTS[method.upper()] += 1
    return await _original(self, method, url, **kwargs)


async def _count(work: Callable[[], Awaitable[Any]], per: int) -> tuple[str, Any]:
    _COUNTS.clear()
    result = await work()
    text = ", ".join(f"{n / per:g} {m}" for m, n in sorted(_COUNTS.items()))
    return text or "0", result


async def _one(env: Env, key: str, count: int) -> list[str]:
    family = FAMILIES[key](env, MiB)
    prefix = f"requests/{key}"
    contender = await family.open(prefix)
    await read_many(contender, await write_many(contender, small_objects(2, 64, 9), 1), 1, 64)
    objects = small_objects(count, 1024, seed=5)
    source = StreamSource(16 * MiB, MiB, seed=6)
    rows = []
    text, handles = await _count(lambda: write_many(contender, objects, 1), count)
    rows.append(f"| {env.backend} | {family.label} | 1 KiB write | {text} |")
    text, _ = await _count(lambda: read_many(contender, handles, 1, 1024), count)
    rows.append(f"| {env.backend} | {family.label} | 1 KiB read | {text} |")
    text, _ = await _count(lambda: write_many(contender, objects[:1], 1), 1)
    rows.append(f"| {env.backend} | {family.label} | rewrite of an existing object | {text} |")
    text, handle = await _count(lambda: contender.write_stream(source.stream()), 1)
    rows.append(f"| {env.backend} | {family.label} | 16 MiB stream write | {text} |")
    text, _ = await _count(lambda: consume(contender, handle, source), 1)
    rows.append(f"| {env.backend} | {family.label} | 16 MiB stream read (1 MiB chunks) | {text} |")
    await family.cleanup(prefix)
    await family.aclose()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.requests", description=__doc__)
    parser.add_argument("--backends", default="s3,gcs,azure")
    parser.add_argument("--contenders", default="fsspec_storage,raw_fsspec")
    parser.add_argument("--count", type=int, default=20)
    args = parser.parse_args()
    aiohttp.ClientSession._request = _counting  # type: ignore[method-assign]
    backends = args.backends.split(",")
    print("| backend | contender | operation | HTTP requests per object |")
    print("|---|---|---|---|")
    with running_envs(backends) as envs:
        for backend in backends:
            for key in args.contenders.split(","):
                if FAMILIES[key].unavailable(envs[backend]) or key.startswith("obstore"):
                    continue  # obstore's requests go through Rust, not aiohttp
                for row in asyncio.run(_one(envs[backend], key, args.count)):
                    print(row, flush=True)


if __name__ == "__main__":
    main()
