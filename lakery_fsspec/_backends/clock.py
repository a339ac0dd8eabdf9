"""Ages of what streams leave in the temp folder, by the server's clock.

A temp object or an unfinished upload is aged as the server's time now (the ``Date``
header of the listing's own response) minus the server's time of its last write
(``LastModified``, a part's upload, ``Initiated``), so that neither the writer's clock
nor the cleaner's can make an in-flight upload look old.
"""

from __future__ import annotations

import time
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import NamedTuple

__all__ = ["Aged", "Upload", "age", "server_time"]


class Aged(NamedTuple):
    """An object, and the seconds since it was last written by the server's clock (None
    where the backend reports no time: then the writer's clock in its name is used)."""

    path: str
    age: float | None


class Upload(NamedTuple):
    """An unfinished upload to ``path``: bytes the service keeps without an object there.

    ``age`` is the seconds since its last part or block arrived (or since it began), by
    the server's clock; ``upload_id`` names it where the path alone does not (S3).
    """

    path: str
    age: float | None
    upload_id: str | None = None


def server_time(date: str | None) -> float:
    """The server's time from an HTTP ``Date`` header, or the local clock without one."""
    if date:
        try:
            return parsedate_to_datetime(date).timestamp()
        except (TypeError, ValueError):
            pass
    return time.time()


def age(now: float, then: datetime | float) -> float:
    """Seconds from ``then`` to ``now``, never negative (a ``Date`` header counts whole
    seconds, so a fresh object may look to be from the future by less than one)."""
    stamp = then.timestamp() if isinstance(then, datetime) else then
    return max(0.0, now - stamp)
