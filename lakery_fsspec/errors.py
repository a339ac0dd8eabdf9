"""Exceptions FsspecStorage raises besides ValueError and labox's NoStorageData."""

from __future__ import annotations

__all__ = ["IntegrityError", "ReadOnlyStorageError"]


class ReadOnlyStorageError(RuntimeError):
    """A write was attempted on a storage created with ``router=None``."""


class IntegrityError(Exception):
    """With ``verify_reads=True``: the bytes read differ from the size or hash recorded."""
