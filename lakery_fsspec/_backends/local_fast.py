"""Linux fast paths for local files, fenced in one place.

Each is measured against the plain path in the benchmark (the ``fsspec_storage_plain``
contender turns it off) and kept only while it wins on some row (benchmarks/RESULTS.md,
"Local fast paths"): unnamed files for blobs.
"""

from __future__ import annotations

import errno
import os

__all__ = ["UNNAMED_FILES", "create_unnamed"]

UNNAMED_FILES = hasattr(os, "O_TMPFILE") and os.path.isdir("/proc/self/fd")
"""Whether a file can be written without a name and linked into its folder when complete."""


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
