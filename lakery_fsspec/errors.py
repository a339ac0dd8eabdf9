"""Exceptions FsspecStorage raises besides ValueError and labox's NoStorageData."""

from __future__ import annotations

__all__ = ["ReadOnlyStorageError"]


class ReadOnlyStorageError(RuntimeError):
    """A write was attempted on a storage created with ``router=None``."""
