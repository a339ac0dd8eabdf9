"""Names of temp objects, which carry their creation time so stale ones can be found."""

from __future__ import annotations

import re
import time
import uuid

__all__ = ["temp_age", "temp_name"]

_NAME = re.compile(r"(\d{13})-[0-9a-f]{32}")


def temp_name() -> str:
    """A unique temp object name: ``<unix milliseconds>-<uuid4 hex>``."""
    return f"{time.time_ns() // 1_000_000:013d}-{uuid.uuid4().hex}"


def temp_age(name: str, now: float | None = None) -> float | None:
    """Seconds since a temp object was created, or None if ``name`` is not a temp name."""
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    now = time.time() if now is None else now
    return now - int(match.group(1)) / 1000
