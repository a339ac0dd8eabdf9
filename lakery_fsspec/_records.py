"""labox's records of a lake: the pointers its database holds for one root, and their
rewrite to another root once the objects are there.

Content records (``labox_contents``) hold each pointer as JSON in ``storage_config``.
Every FsspecStorage has the same labox storage name, so records are told apart by the
root their pointer names, compared canonically (as ``relocated=`` compares roots).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Container
from typing import TYPE_CHECKING, Any

from labox.core.database import ContentRecord
from sqlalchemy import select, update

from lakery_fsspec._location import canonical_or_as_is
from lakery_fsspec._pointer import FsspecPointer, parse_pointer
from lakery_fsspec._relocation import Place

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

__all__ = ["REWRITE_BATCH", "all_pointers", "pointers_under", "rewrite_pointers"]

REWRITE_BATCH = 500
"""Records rewritten per transaction."""

_NAME = "lakery.fsspec@v1"


def _place(pointer: FsspecPointer) -> Place:
    return Place(canonical_or_as_is(pointer["protocol"]), pointer["root"].rstrip("/"))


async def _records(
    engine: AsyncEngine, place: Place | None
) -> AsyncIterator[tuple[Any, str, FsspecPointer]]:
    """``(record id, stored JSON, pointer)`` of each content record whose pointer names
    ``place`` (any place for None), in id order (a resumed run sees the same order),
    streamed."""
    query = (
        select(ContentRecord.id, ContentRecord.storage_config)
        .where(ContentRecord.storage_name == _NAME)
        .order_by(ContentRecord.id)
        .execution_options(yield_per=1000)
    )
    async with engine.connect() as connection:
        rows = await connection.stream(query)
        async for record_id, stored in rows:
            try:
                pointer = parse_pointer(stored)
            except ValueError:
                continue  # not one of ours to copy; verify reports bad pointers
            if place is None or _place(pointer) == place:
                yield record_id, stored, pointer


async def all_pointers(engine: AsyncEngine) -> AsyncIterator[FsspecPointer]:
    """The pointers of every FsspecStorage record, whatever root they name, streamed."""
    async for _, _, pointer in _records(engine, None):
        yield pointer


async def pointers_under(
    engine: AsyncEngine, place: Place, skip: int = 0
) -> AsyncIterator[FsspecPointer]:
    """The pointers labox's records hold for objects under ``place`` (one per record, in
    record order), but the first ``skip``."""
    index = 0
    async for _, _, pointer in _records(engine, place):
        if index >= skip:
            yield pointer
        index += 1


async def rewrite_pointers(
    engine: AsyncEngine, old: Place, new: Place, landed: Container[str], batch: int = REWRITE_BATCH
) -> int:
    """Point the records of objects under ``old`` whose relative path is in ``landed`` at
    ``new`` instead, ``batch`` records per transaction; how many were rewritten. A record
    changed meanwhile (its JSON is not what was read) is left alone."""
    pending: list[tuple[Any, str, str]] = []
    rewritten = 0

    async def flush() -> int:
        async with engine.begin() as connection:
            count = 0
            for record_id, stored, moved in pending:
                result = await connection.execute(
                    update(ContentRecord)
                    .where(ContentRecord.id == record_id, ContentRecord.storage_config == stored)
                    .values(storage_config=moved)
                )
                count += result.rowcount
        pending.clear()
        return count

    updates: list[tuple[Any, str, str]] = []
    async for record_id, stored, pointer in _records(engine, old):
        if pointer["path"] in landed:
            moved = {**pointer, "protocol": new.protocol, "root": new.root}
            updates.append((record_id, stored, json.dumps(moved, separators=(",", ":"))))
    # Written after reading: SQLite cannot update while a read streams on another connection.
    for update_ in updates:
        pending.append(update_)
        if len(pending) >= batch:
            rewritten += await flush()
    if pending:
        rewritten += await flush()
    return rewritten
