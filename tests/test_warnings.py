"""Warnings as errors: every operation works for a user who runs with ``-W error``.

aiohttp warns (ResourceWarning) about request bodies over 1 MiB given as raw bytes; under
``-W error`` that warning is raised inside the cloud client and the upload fails. The
storage must hand its clients bodies they send silently, on every backend.
"""

from __future__ import annotations

import gc
import warnings

from conftest import BackendInfo
from helpers import Stream, chunked, digest_of, payload, read

from lakery_fsspec import FsspecStorage


async def test_large_blob_and_multi_block_stream_with_warnings_as_errors(
    backend: BackendInfo, root_url: str
) -> None:
    storage = FsspecStorage(root_url, storage_options=backend.storage_options, chunk_size=2**20)
    blob = payload(3 * 2**20 + 1)
    streamed = payload(17 * 2**20 + 3, seed=1)  # several upload blocks on every backend
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # in every thread: the filters are global
        pointer = await storage.write_data(blob, digest_of(blob), {})
        assert await storage.write_data(blob, digest_of(blob), {}) == pointer  # exists
        stream = Stream(chunked(streamed, 2**20))
        streamed_pointer = await storage.write_data_stream(stream, stream.get_digest, {})
        again = Stream(chunked(streamed, 2**20))
        assert await storage.write_data_stream(again, again.get_digest, {}) == streamed_pointer
        for how in ("blob", "stream"):
            assert await read(storage, pointer, how) == blob
            assert await read(storage, streamed_pointer, how) == streamed
        assert await storage.list_temp() == []
        del storage
        gc.collect()  # what was left unclosed warns when it is collected
