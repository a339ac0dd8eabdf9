"""obstore's own API on the same backend: what a speed-seeking user picks instead.

Reads return obstore's ``Bytes`` buffers (zero-copy from Rust), as its users get them.
Streams: ``put_async`` of the async iterator to a temp path (multipart), ``rename_async``
to the content-addressed path, and ``get_async(...).stream()`` for reads.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import obstore
from labox.core.storage import Digest
from obstore.store import AzureStore, GCSStore, LocalStore, MemoryStore, S3Store

from benchmarks.contenders.base import Contender, Family
from benchmarks.contenders.raw_fsspec import block_size
from benchmarks.envs import (
    AWS_KEY,
    AWS_REGION,
    AWS_SECRET,
    AZURITE_ACCOUNT,
    AZURITE_KEY,
    FILE_SERVERS,
    Env,
)

__all__ = ["GCS_UNAVAILABLE", "ObstoreFamily", "obstore_config"]

_HTTP = {"allow_http": True}


def obstore_config(env: Env) -> dict[str, Any]:
    """Keyword arguments that point an obstore store (or its fsspec adapter) at ``env``."""
    if env.backend == "s3":
        return {
            "config": {
                "endpoint": env.endpoint,
                "access_key_id": AWS_KEY,
                "secret_access_key": AWS_SECRET,
                "region": AWS_REGION,
                "virtual_hosted_style_request": False,
            },
            "client_options": _HTTP,
        }
    if env.backend == "gcs":
        return {
            "config": {"base_url": env.endpoint, "skip_signature": True},
            "client_options": _HTTP,
        }
    if env.backend == "azure":
        return {
            "config": {
                "account_name": AZURITE_ACCOUNT,
                "account_key": AZURITE_KEY,
                "endpoint": f"{env.endpoint}/{AZURITE_ACCOUNT}",
            },
            "client_options": _HTTP,
        }
    return {}


def _store(env: Env, prefix: str) -> Any:
    options = obstore_config(env)
    if env.backend == "local":
        return LocalStore(Path(env.root) / prefix, mkdir=True)
    if env.backend == "memory":
        return MemoryStore()
    if env.backend == "s3":
        return S3Store(env.root, prefix=prefix, **options)
    if env.backend == "gcs":
        return GCSStore(env.root, prefix=prefix, **options)
    return AzureStore(env.root, prefix=prefix, **options)


GCS_UNAVAILABLE = (
    "n/a: obstore's GCSStore writes with GCS's XML API (PUT /bucket/key), which "
    "fake-gcs-server answers with 400 invalid uploadType"
)


class ObstoreFamily(Family):
    key = "obstore"
    label = "obstore"

    @classmethod
    def applies(cls, env: Env) -> bool:
        return env.backend not in FILE_SERVERS  # obstore speaks object stores and files

    @classmethod
    def unavailable(cls, env: Env) -> str | None:
        return GCS_UNAVAILABLE if env.backend == "gcs" else None

    async def open(self, prefix: str) -> Contender:
        return Obstore(_store(self.env, prefix), block_size(self.env.protocol, self.chunk_size))


class Obstore(Contender):
    def __init__(self, store: Any, chunk_size: int) -> None:
        self.store = store
        self.chunk_size = chunk_size

    async def write_blob(self, data: bytes, digest: Digest) -> str:
        path = digest["content_hash"]
        await obstore.put_async(self.store, path, data)
        return path

    async def read_blob(self, handle: str) -> Any:
        result = await obstore.get_async(self.store, handle)
        return await result.bytes_async()

    async def write_stream(self, stream: Any) -> str:
        temp = f"tmp/{uuid.uuid4().hex}"
        await obstore.put_async(self.store, temp, stream, chunk_size=self.chunk_size)
        final = stream.get_digest()["content_hash"]
        await obstore.rename_async(self.store, temp, final)
        return final

    async def read_stream(self, handle: str) -> AsyncIterator[Any]:
        result = await obstore.get_async(self.store, handle)
        async for chunk in result.stream(min_chunk_size=self.chunk_size):
            yield chunk
