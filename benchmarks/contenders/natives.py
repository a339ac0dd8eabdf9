"""labox's own storage for each backend, pointed at the same emulator (no mocks).

- local: ``FileStorage``; memory: ``MemoryStorage`` (its own dict, not fsspec's store).
- s3: ``S3Storage`` over a boto3 client (calls run in worker threads).
- gcs: ``labox.extra.google.BlobStorage`` over google-cloud-storage's client, with its
  ``api_endpoint`` pointed at fake-gcs-server and anonymous credentials.
- azure: ``labox.extra.azure.BlobStorage`` over azure-storage-blob's aio client, from
  Azurite's connection string.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.contenders.base import Contender, Family, LaboxContender
from benchmarks.envs import FILE_SERVERS, Env, boto3_client

__all__ = ["NativeFamily"]


class NativeFamily(Family):
    key = "native"
    label = "labox native"

    @classmethod
    def applies(cls, env: Env) -> bool:
        return env.backend not in FILE_SERVERS  # labox has no SFTP, FTP or WebDAV storage

    async def open(self, prefix: str) -> Contender:
        return LaboxContender(self._storage(prefix))

    def _storage(self, prefix: str) -> Any:
        env = self.env
        if env.backend == "local":
            from labox.builtin.storages import FileStorage

            return FileStorage(Path(env.root) / prefix, mkdir=True, chunk_size=self.chunk_size)
        if env.backend == "memory":
            from labox.builtin.storages import MemoryStorage

            return MemoryStorage(chunk_size=self.chunk_size)
        if env.backend == "s3":
            from labox.extra.aws import S3Storage, simple_s3_router

            if not hasattr(self, "client"):
                self.client = boto3_client(env.endpoint)
            return S3Storage(
                s3_client=self.client,
                s3_router=simple_s3_router(env.root, prefix),
                stream_reader_max_part_size=self.chunk_size,
            )
        if env.backend == "gcs":
            from labox.extra.google import BlobStorage, simple_blob_router

            if not hasattr(self, "client"):
                self.client = _gcs_client(env.endpoint)
            return BlobStorage(
                storage_client=self.client, storage_router=simple_blob_router(env.root, prefix)
            )
        from labox.extra.azure import BlobStorage, simple_blob_router

        if not hasattr(self, "client"):
            from azure.storage.blob.aio import BlobServiceClient

            self.client = BlobServiceClient.from_connection_string(
                env.storage_options["connection_string"]
            )
        return BlobStorage(
            service_client=self.client, blob_router=simple_blob_router(env.root, prefix)
        )

    async def aclose(self) -> None:
        client = getattr(self, "client", None)
        if self.env.backend == "azure" and client is not None:
            await client.close()


def _gcs_client(endpoint: str) -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(
        project="test",
        credentials=AnonymousCredentials(),  # type: ignore[no-untyped-call]
        client_options={"api_endpoint": endpoint},
    )
