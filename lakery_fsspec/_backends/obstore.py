"""obstore's fsspec adapter (``obstore.fsspec.register("s3")``), for any protocol it serves."""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

from lakery_fsspec._backends.base import Backend
from lakery_fsspec._backends.spec import ProtocolSpec
from lakery_fsspec._writers import FileWriter, Writer

if TYPE_CHECKING:
    from labox.core.storage import Digest

__all__ = ["Obstore", "ObstoreBackend"]


class ObstoreBackend(Backend):
    """obstore's ``FsspecStore`` in place of s3fs, gcsfs or adlfs: the generic backend
    (the protocol's own backend calls its usual client's internals), except that a
    failed stream aborts its upload.

    Pointers record the protocol (``s3``), never the client, so a storage on s3fs reads
    what one on obstore wrote and the other way round.
    """

    def open_writer(self, path: str, digest: Digest, block_size: int) -> Writer:
        # obstore's writer sends parts of its own buffer size (10 MiB), above S3's minimum.
        file = self.fs.open(path, "wb", **self.write_options(digest))
        return _ObstoreWriter(self.fs, path, file)


class _ObstoreWriter(FileWriter):
    """A writer over obstore's ``BufferedFile``, whose ``discard`` does nothing: left
    unclosed, its upload stays unfinished (a multipart upload, billed on S3)."""

    def abort(self) -> None:
        # Leaving obstore's own writer through an error aborts the upload; close() would
        # complete it.
        writer = getattr(self._file, "_writer", None)
        if writer is not None and not self._file.closed:
            with contextlib.suppress(Exception):
                writer.__exit__(_Aborted, _Aborted("the stream write failed"), None)
        self._file.closed = True
        with contextlib.suppress(FileNotFoundError):
            self._fs.rm_file(self._path)


class _Aborted(Exception):
    """What obstore's writer is told ended the upload."""


class Obstore(ProtocolSpec):
    """obstore's adapter, under whichever protocol it is registered for."""

    filesystem = "obstore.fsspec.FsspecStore"
    extra = "obstore"
    backend = ObstoreBackend
