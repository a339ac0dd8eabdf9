"""Names of temp objects, and the paths that list_temp and cleanup_temp report."""

from __future__ import annotations

import re
import time
import uuid
from typing import Literal, Self

__all__ = ["TempPath", "temp_age", "temp_name"]

_NAME = re.compile(r"(\d{13})-[0-9a-f]{32}")


def temp_name() -> str:
    """A unique temp object name: ``<unix milliseconds>-<uuid4 hex>``.

    The name marks the object as this storage's to clean up; its time is the writer's
    clock, used for ageing only where the backend reports no time of its own.
    """
    return f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex}"


def temp_age(name: str, now: float | None = None) -> float | None:
    """Seconds since a temp object was named (by the writer's and the local clock), or
    None if ``name`` is not a temp name."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    now = time.time() if now is None else now
    return now - int(match.group(1)) / 1000


class TempPath(str):
    """A path that ``list_temp`` or ``cleanup_temp`` reports: a plain ``str``, which also
    says what is there.

    ``kind`` is ``"object"`` for a temp object, ``"upload"`` for an unfinished upload to
    that path (an S3 multipart upload, Azure's uncommitted blocks): bytes the service
    keeps, and bills, without an object at the path. ``upload_id`` is S3's UploadId (None
    otherwise).
    """

    kind: Literal["object", "upload"]
    upload_id: str | None

    def __new__(
        cls,
        path: str,
        kind: Literal["object", "upload"] = "object",
        upload_id: str | None = None,
    ) -> Self:
        self = super().__new__(cls, path)
        self.kind = kind
        self.upload_id = upload_id
        return self
