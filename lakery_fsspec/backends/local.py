"""Local files."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from lakery_fsspec.backends.base import Backend

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["LocalBackend"]


class LocalBackend(Backend):
    """Local files: writes are not atomic, so whole objects also go through temp + rename."""

    async def move(self, source: str, destination: str, digest: Digest) -> None:
        await self._makedirs(destination)
        # os.replace is one atomic rename on the same filesystem (the temp folder is
        # inside the root), where fsspec's mv may fall back to copying.
        await self.io.thread(lambda: os.replace(source, destination))
