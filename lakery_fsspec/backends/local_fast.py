"""Linux fast paths for local files, fenced in one place.

Each is measured against the plain path in the benchmark (the ``fsspec_storage_plain``
contender turns both off) and kept only while it wins by at least 1.2x on some row; see
benchmarks/RESULTS.md. Neither makes a call on the event loop that can wait.
"""

from __future__ import annotations

import errno
import os
from typing import BinaryIO

__all__ = ["CACHED_READS", "UNNAMED_FILES", "create_unnamed", "read_cached"]

UNNAMED_FILES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
"""Whether a file can be written without a name and linked into its folder when complete."""
_CACHED_ONLY: int | None = getattr(os, "RWF_NOWAIT", None)
"""Linux's flag for reads that return only what the page cache holds, never waiting for
the disk: stream chunks read with it need no worker-thread hop."""
CACHED_READS = _CACHED_ONLY is not None


def read_cached(file: BinaryIO, buffer: bytearray, offset: int) -> bytes | None:
    """The next chunk if the page cache holds it (b"" at the end), else None: read on the
    caller's loop, which this never blocks (Linux's RWF_NOWAIT does not wait for the disk)."""
    if _CACHED_ONLY is None:
        return None
    try:
        size = os.preadv(file.fileno(), [buffer], offset, _CACHED_ONLY)
    except OSError:  # BlockingIOError: not cached; others: unsupported by this filesystem
        return None
    return bytes(buffer) if size == len(buffer) else bytes(memoryview(buffer)[:size])


def create_unnamed(path: str, data: bytes) -> bool | None:
    """Write an unnamed file in ``path``'s folder and link it there: one directory entry
    instead of a temp name and a rename, and a crash leaves nothing behind. False if
    ``path`` exists; None if this filesystem has no unnamed files or the folder is new
    (the plain path makes it)."""
    folder = os.path.dirname(path)
    try:
        fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o666)
    except FileNotFoundError:
        return None
    except OSError as error:
        if error.errno in (errno.EOPNOTSUPP, errno.EISDIR):  # EISDIR: kernel without it
            return None
        raise
    with open(fd, "wb") as file:
        file.write(data)
        file.flush()
        try:
            # A dir fd makes Python call linkat(AT_SYMLINK_FOLLOW), which links the file
            # behind the /proc link; for an absolute path the fd itself is not used.
            os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd)
        except FileExistsError:
            return False
        except OSError:  # the /proc link refused (a foreign /proc, say): use a named temp
            return None
    return True
