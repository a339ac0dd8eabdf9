"""Azure Blob Storage and Data Lake Gen2, through adlfs."""

from __future__ import annotations

from lakery_fsspec.backends.base import Backend

__all__ = ["AzureBackend"]


class AzureBackend(Backend):
    """Azure: atomic block blob uploads."""

    atomic_put = True
    needs_dirs = False
