"""The operations FsspecStorage needs from a filesystem, done the generic fsspec way."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import posixpath
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Awaitable,
    Callable,
)
from functools import partial
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

from lakery_fsspec._backends.blocks import BlockWriter, upload_blocks
from lakery_fsspec._backends.clock import Aged, Upload
from lakery_fsspec._bridge import cleanup
from lakery_fsspec._writers import FileWriter, SerialWriter, Writer

if TYPE_CHECKING:
    from labox.core.storage import Digest

    from lakery_fsspec._bridge import Bridge

__all__ = ["Backend", "Entry", "blocks", "cleanup"]

_LOG = logging.getLogger("lakery_fsspec")


class Entry(NamedTuple):
    """One thing in a folder: its ``name`` there, its ``kind`` (``file``, ``directory``,
    ``link`` or what the filesystem calls it) and its size if known."""

    name: str
    kind: str
    size: int | None


_KINDS = ("file", "directory")


class Backend:
    """How FsspecStorage does each operation on one kind of filesystem: the data path.

    The defaults hold for any fsspec filesystem; subclasses handle what fsspec leaves
    backend-specific: metadata, server-side moves, raw reads, cheap existence checks and
    block sizes. What the protocol is (names, URLs, options, its client) is its
    ``ProtocolSpec``'s. Every method may be called from any event loop.
    """

    # --- capabilities ---------------------------------------------------------------------
    atomic_put: ClassVar[bool] = False
    """Whether a single put is never visible half-written (object stores, memory)."""
    exclusive_put: ClassVar[bool] = False
    """Whether ``pipe_file(mode="create")`` refuses to overwrite, in the same request."""
    needs_dirs: ClassVar[bool] = True
    """Whether parent directories must exist before a file is written or moved there."""
    bucketed: ClassVar[bool] = False
    """Whether the first segment of a root is a bucket or container, which the storage
    never makes (object stores): listing a root may then fail because it is missing."""
    min_block_size: ClassVar[int] = 1
    """The least an upload sends in one block (a request each, on object stores)."""
    block_multiple: ClassVar[int] = 1
    """What every upload block but the last must be a multiple of."""
    min_range_size: ClassVar[int] = 1
    """The least a stream read asks for in one ranged read; chunks are cut from it (fewer,
    larger requests where each one costs a round trip)."""
    process_local: ClassVar[bool] = False
    """Whether the store lives in the process's own memory, unseen by other processes."""

    def __init__(self, protocol: str, bridge: Bridge) -> None:
        self.protocol = protocol
        self.io = bridge
        # Any: each backend calls its own filesystem's untyped, backend-specific API.
        self.fs: Any = bridge.fs

    @classmethod
    def block_size(cls, chunk_size: int) -> int:
        """The upload block size to use for a requested chunk size."""
        size = max(chunk_size, cls.min_block_size)
        return -(-size // cls.block_multiple) * cls.block_multiple

    async def size(self, path: str) -> int | None:
        """The stored size of the object at ``path``, or None if there is none."""
        try:
            return int((await self.io.call("info", path))["size"])
        except FileNotFoundError:
            return None

    async def exists(self, path: str) -> bool:
        """Whether an object exists at ``path``."""
        return await self.size(path) is not None

    async def intact(self, path: str, expected: int) -> bool:
        """Whether an object of ``expected`` bytes is at ``path`` (one ``size`` call: a
        HEAD on S3 and GCS, a stat elsewhere).

        Content addressing keeps an existing object, but one of another size is damage
        (truncated, or overwritten), not "already stored": it is removed, so that the
        write that found it puts the object right. Rot that keeps the size is for
        ``verify`` to find.
        """
        size = await self.size(path)
        if size is None or size == expected:
            return size is not None
        _LOG.warning(
            "Replacing %s://%s: it holds %d bytes where its content has %d (damaged).",
            self.protocol,
            path,
            size,
            expected,
        )
        await self.remove(path)
        return False

    async def read(self, path: str, start: int | None = None, end: int | None = None) -> bytes:
        """The stored bytes of ``path`` (a byte range if given), exactly as stored."""
        return await self.io.call("cat_file", path, start=start, end=end)

    async def iter_chunks(self, path: str, chunk_size: int) -> AsyncIterator[bytes]:
        """Yield the object in chunks of at most ``chunk_size`` bytes, cut from ranged
        reads of at least ``min_range_size``.

        The next range is requested while the caller handles the current one: two
        ranges in memory at most, and no idle round trip between them.
        """
        size = await self.size(path)
        if size is None:
            raise FileNotFoundError(path)
        step = max(chunk_size, self.min_range_size)
        ranges = iter([(start, min(start + step, size)) for start in range(0, size, step)])
        ahead = self._read_ahead(path, next(ranges, None))
        try:
            while ahead is not None:
                current, ahead = ahead, self._read_ahead(path, next(ranges, None))
                data = await current
                if len(data) <= chunk_size:
                    yield data
                    continue
                for start in range(0, len(data), chunk_size):
                    yield data[start : start + chunk_size]
        finally:
            if ahead is not None:
                ahead.cancel()
                ahead.add_done_callback(_consume)

    def _read_ahead(self, path: str, span: tuple[int, int] | None) -> asyncio.Task[bytes] | None:
        return None if span is None else asyncio.ensure_future(self.read(path, *span))

    async def create(self, path: str, data: bytes, digest: Digest, temp: str) -> bool:
        """Write a new object unless one is at ``path`` already; whether it was written.

        It is never visible half-written: where a put is not atomic it is staged at the
        free path ``temp`` and moved. Where the store can refuse an overwrite in the same
        request, that is the existence check.
        """
        if self.exclusive_put:
            try:
                await self.put(path, data, digest, mode="create")
            except FileExistsError:
                return False
            return True
        if await self.exists(path):
            return False
        if self.atomic_put:
            await self.put(path, data, digest)
            return True
        try:
            await self.put(temp, data, digest)
            await self._move_over(temp, path)
        except BaseException:
            await self.discard(temp)
            raise
        return True

    async def put(self, path: str, data: bytes, digest: Digest, **options: Any) -> None:
        """Write a whole object in one call, with the digest's metadata where supported."""
        await self._makedirs(path)
        await self.io.call("pipe_file", path, data, **self.write_options(digest), **options)

    def write_options(self, digest: Digest) -> dict[str, Any]:
        """Keyword arguments that carry content type and encoding to pipe_file and open."""
        return {}

    async def upload_new(
        self,
        path: str,
        stream: AsyncIterable[bytes],
        digest: Digest,
        chunk_size: int,
        temp: str,
    ) -> bool:
        """Write a stream at ``path`` unless an object is there; whether it was written.

        Never visible half-written, and nothing remains if the stream raises. The generic
        way uploads to the free path ``temp`` and moves it create-only (``move``); a store
        whose uploads stay invisible until completed, and which can refuse an overwrite
        on completion, writes ``path`` directly (S3).
        """
        try:
            await self.upload(temp, stream, digest, chunk_size)
            return await self.move(temp, path, digest)
        except BaseException:
            await self.discard(temp)
            raise

    async def upload(
        self, path: str, stream: AsyncIterable[bytes], digest: Digest, chunk_size: int
    ) -> None:
        """Write a stream to ``path`` block by block; on any failure nothing remains.

        ``digest`` may be incomplete (the stream is not read yet): only its content type
        and encoding are used. Memory is bounded by one block, whatever the stream's length.
        """
        block_size = self.block_size(chunk_size)
        if (writer := self.block_writer(path, digest, block_size)) is not None:
            await upload_blocks(writer, stream, f"{self.protocol}://{path}")
            return
        await self._upload_through(
            path, stream, digest, chunk_size, partial(self.open_writer, path, digest)
        )

    def block_writer(self, path: str, digest: Digest, block_size: int) -> BlockWriter | None:
        """A writer whose requests run on the caller's loop (object stores' block
        uploads), or None to upload through ``open_writer`` in worker threads."""
        return None

    async def _upload_through(
        self,
        path: str,
        stream: AsyncIterable[bytes],
        digest: Digest,
        chunk_size: int,
        opener: Callable[[int], Writer],
    ) -> None:
        """``upload``, through the writer ``opener`` makes for a block size."""
        block_size = self.block_size(chunk_size)
        # Serialized: a step abandoned at a timeout never races the abort.
        writer = SerialWriter(partial(opener, block_size))
        written = False
        try:
            await self.io.thread(writer.open)
            async with contextlib.aclosing(blocks(stream, block_size)) as gathered:
                async for block in gathered:
                    # One worker-thread hop per block, no copies of ours.
                    await self.io.thread(partial(_write_all, writer, block, block_size))
                    written = True
            if written:
                await self.io.thread(writer.commit)
        except BaseException:
            await cleanup(
                self.io.thread(writer.abort), f"abort the upload to {self.protocol}://{path}"
            )
            raise
        if not written:
            # Some writers (s3fs) drop the metadata of an empty file; a put keeps it.
            await self.io.thread(writer.abort)
            await self.put(path, b"", digest)

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        """Open a streaming writer (blocking; called in a worker thread)."""
        if self.needs_dirs:
            self.fs.makedirs(posixpath.dirname(path), exist_ok=True)
        file = self.fs.open(path, "wb", block_size=block_size, **self.write_options(digest))
        return FileWriter(self.fs, path, file)

    async def move(self, source: str, destination: str, digest: Digest) -> bool:
        """Move an object server-side unless one is at ``destination`` already; whether
        it was moved. Either way ``source`` is gone afterwards.

        Backends whose store can refuse an overwrite in the same request do so (a refusal
        is "already stored"). This generic one checks first and then moves, which is not
        race-free: two writers of the same content may both move, the second over the
        first (same bytes, so only a versioned or write-once store tells).
        """
        if await self.intact(destination, digest["content_size"]):
            await self.remove(source)
            return False
        await self._move_over(source, destination)
        return True

    async def _move_healing(
        self,
        move_new: Callable[[], Awaitable[bool]],
        source: str,
        destination: str,
        digest: Digest,
    ) -> bool:
        """``move``, for a create-only ``move_new()`` that leaves a refused source where it
        is: on a refusal, one stat tells the content already stored from a damaged object
        (see ``intact``), which is replaced. ``source`` is gone afterwards either way."""
        moved = await move_new()
        if not moved and not await self.intact(destination, digest["content_size"]):
            moved = await move_new()
        if not moved:
            await self.remove(source)
        return moved

    async def _move_over(self, source: str, destination: str) -> None:
        """Move an object server-side, over any at ``destination``: a rename, or a copy
        and a delete."""
        await self._makedirs(destination)
        if self.io.is_async:
            await self.io.call("cp_file", source, destination)
            await self.remove(source)
        else:
            await self.io.call("mv", source, destination)

    async def copy_new(
        self, source: str, destination: str, digest: Digest, temp: str, *, link: bool = False
    ) -> bool | None:
        """Copy the object at ``source``, on this same store, to ``destination`` without
        its bytes passing through this process, unless an object is there already:
        whether it was created, or None where the store cannot (the caller streams).
        ``temp`` is a free path to stage it at; ``link`` asks for a hard link where the
        store has them (the two names share the bytes: no backup). PermissionError or
        FileNotFoundError where these credentials cannot read ``source``."""
        return None

    async def entries(self, folder: str) -> list[Entry]:
        """What is directly in ``folder``, files before folders of the same name, in name
        order, listed afresh; FileNotFoundError if there is no folder."""
        self.fs.invalidate_cache(folder)  # fresh, and no listings cache growing with a walk
        try:
            listed: list[dict[str, Any]] = await self.io.call("ls", folder, detail=True)
        finally:
            self.fs.invalidate_cache(folder)
        prefix = folder.rstrip("/") + "/"
        found: list[Entry] = []
        for item in listed:
            name = str(item.get("name", "")).rstrip("/")
            if name.startswith(prefix) and "/" not in (rest := name[len(prefix) :]) and rest:
                kind = item.get("type")
                size = item.get("size")
                found.append(
                    Entry(
                        rest,
                        "link" if item.get("islink") and kind not in _KINDS else kind or "",
                        size if isinstance(size, int) else None,
                    )
                )
        found.sort(key=lambda entry: (entry.name, entry.kind == "directory"))
        return found

    async def root_missing(self, root: str, error: FileNotFoundError) -> bool:
        """Whether ``error``, raised listing a folder under ``root``, means that the root's
        bucket or container is missing (object stores never make one), not merely that
        the folder was never written to."""
        if not self.bucketed:
            return False
        return not await self.io.call("exists", root.strip("/").split("/", 1)[0])

    async def list_aged(self, folder: str) -> list[Aged]:
        """The objects directly in ``folder`` with their age by the server's clock;
        FileNotFoundError if there is no folder.

        fsspec reports no common, comparable time, so the generic backend reports none:
        temps are then aged by the writer's clock in their names.
        """
        prefix = folder.rstrip("/")
        return [Aged(f"{prefix}/{entry.name}", None) for entry in await self.entries(folder)]

    async def list_uploads(self, folder: str) -> list[Upload]:
        """Unfinished uploads to paths directly in ``folder`` (none where the service has
        no such thing, or cannot list them)."""
        return []

    async def abort_upload(self, path: str, upload_id: str | None) -> None:
        """Drop an unfinished upload found by ``list_uploads``; nothing if it is gone."""

    async def remove(self, path: str) -> None:
        """Delete an object if it exists."""
        with contextlib.suppress(FileNotFoundError):
            await self.io.call("rm_file", path)

    async def remove_folder(self, path: str) -> None:
        """Remove the folder at ``path`` if it is empty (where folders exist at all);
        nothing if it is not there, or not empty."""
        if self.needs_dirs:
            with contextlib.suppress(OSError):
                await self.io.call("rmdir", path)

    async def discard(self, temp: str) -> None:
        """Remove a temp object after a failure, even while the caller is being cancelled;
        never raise (the failure that got us here must propagate)."""
        await cleanup(self.remove(temp), f"remove the temp object {self.protocol}://{temp}")

    async def _makedirs(self, path: str) -> None:
        if self.needs_dirs:
            await self.io.call("makedirs", posixpath.dirname(path), exist_ok=True)


async def blocks(stream: AsyncIterable[bytes], block_size: int) -> AsyncGenerator[list[bytes]]:
    """The stream's chunks gathered, uncopied, into blocks of at least ``block_size``
    bytes; the last block may be smaller, and an empty stream has none."""
    pending: list[bytes] = []
    size = 0
    async for chunk in stream:
        pending.append(chunk)
        size += len(chunk)
        if size >= block_size:
            yield pending
            pending, size = [], 0
    if size:
        yield pending


def _consume(task: asyncio.Task[bytes]) -> None:
    """Retrieve an abandoned read's outcome so that asyncio does not warn about it."""
    if not task.cancelled():
        task.exception()


def _write_all(writer: SerialWriter, chunks: list[bytes], block_size: int) -> None:
    """Write chunks in order, cutting any larger than a block (writers hold a few times
    what one write hands them)."""
    for chunk in chunks:
        view = memoryview(chunk)
        for start in range(0, len(view), block_size):
            writer.write(view[start : start + block_size])
