"""``lakery-fsspec check``: probe a storage step by step and say what works and what does not."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
import urllib.request
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from labox.core.storage import Digest

from lakery_fsspec._location import redacted
from lakery_fsspec._pointer import FsspecPointer
from lakery_fsspec._storage import DEFAULT_CHUNK_SIZE, FsspecStorage
from lakery_fsspec.cli.diagnose import Diagnosis, diagnose, diagnostics_of, probe_endpoint
from lakery_fsspec.cli.filestream import FileStream
from lakery_fsspec.cli.progress import human_size

__all__ = ["PROBE_FOLDER", "Doctor"]

PROBE_FOLDER = ".lakery-check"
"""Folder under the storage root where the check writes its probe objects."""

_STALE = 86_400.0
T = TypeVar("T")


class _Fallbacks(logging.Handler):
    """Collects what the storage gave up on this server while the checks run (the
    WARNINGs of the ``lakery_fsspec.fallback`` logger), to show them at the end."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self._logger = logging.getLogger("lakery_fsspec.fallback")

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())

    def __enter__(self) -> None:
        self._logger.addHandler(self)

    def __exit__(self, *exc_info: object) -> None:
        self._logger.removeHandler(self)


class Problem(Exception):
    """A check step found something wrong that is not an exception of the storage's."""

    def __init__(self, diagnosis: Diagnosis) -> None:
        super().__init__(diagnosis.message)
        self.diagnosis = diagnosis


class Doctor:
    """Runs the checks of one storage URL, printing one line per step.

    Args:
        url: The storage URL.
        storage_options: Options for its filesystem, as the user gave them.
        template: A path template to validate (the probes themselves go to ``PROBE_FOLDER``).
        temp_prefix: The storage's temp folder.
        timeout: Seconds allowed to first contact the storage; data steps get 12 times as long.
        stream_size: Size of the object streamed through temp and move.
        echo: Where step lines go.
    """

    def __init__(
        self,
        url: str,
        storage_options: Mapping[str, Any],
        *,
        template: str | None = None,
        temp_prefix: str = ".lakery-tmp",
        timeout: float = 10.0,
        stream_size: int = 12 * 2**20,
        echo: Callable[[str], object] = print,
    ) -> None:
        self.url = url
        self.options = dict(storage_options)
        self.template = template
        self.temp_prefix = temp_prefix
        self.timeout = timeout
        self.stream_size = stream_size
        self.echo = echo
        self.diagnosis: Diagnosis | None = None
        """Why the check failed (None while it has not)."""
        self.error: BaseException | None = None
        """The exception behind the failure, for --debug."""
        self.failed_step = ""
        self._protocol = ""
        self._endpoint: str | None = None
        self._storage: FsspecStorage | None = None
        self._probes: list[FsspecPointer] = []
        self._blob = (b"", "")
        self._stream_hash = ""
        self._started = time.time()

    # --- running --------------------------------------------------------------------------

    def run(self) -> bool:
        """Run every step until one fails; True when all passed. Probes are always removed."""
        self._started = time.time()
        self.echo(f"checking {redacted(self.url)}")
        steps: list[tuple[str, str, Callable[[], str | None]]] = [
            ("storage", "open", self._build),
            ("endpoint", "connect", self._probe_endpoint),
            ("list", "list", self._list),
            ("write blob", "write", self._write_blob),
            ("write stream", "write", self._write_stream),
            ("read blob", "read", self._read_blob),
            ("read stream", "read", self._read_stream),
            ("no temp left", "list", self._no_temp_left),
            ("clean up", "delete", self._remove_probes),
        ]
        fallbacks = _Fallbacks()
        try:
            with fallbacks:
                for name, action, step in steps:
                    if not self._step(name, action, step):
                        self._remove_probes_quietly()
                        return False
        except KeyboardInterrupt:
            self._remove_probes_quietly()
            raise
        for message in fallbacks.messages:  # what the server refused, and what that costs
            self.echo(f"note: {message}")
        shown = redacted(self.url)
        self.echo(f"OK: {shown} works for lakery-fsspec (writes, streams, reads, moves).")
        return True

    def _step(self, name: str, action: str, step: Callable[[], str | None]) -> bool:
        started = time.perf_counter()
        try:
            detail = step()
        except Exception as error:  # every failure is reported, none is raised
            self._line(name, "FAILED", started, "")
            self.failed_step = name
            self.error = error
            if isinstance(error, Problem):
                self.diagnosis = error.diagnosis
            else:
                self.diagnosis = diagnose(
                    error,
                    url=redacted(self.url),
                    protocol=self._protocol,
                    action=action,
                    endpoint=self._endpoint,
                )
            return False
        if detail is not None:
            self._line(name, "ok", started, detail)
        return True

    def _line(self, name: str, status: str, started: float, detail: str) -> None:
        milliseconds = (time.perf_counter() - started) * 1000
        self.echo(f"  {name:<13} {status:<6} {milliseconds:8.0f} ms  {detail}".rstrip())

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout: float, what: str) -> T:
        async def bounded() -> T:
            try:
                return await asyncio.wait_for(coroutine, timeout)
            except TimeoutError:
                msg = f"{what} took longer than {timeout:g} s"
                raise TimeoutError(msg) from None

        return asyncio.run(bounded())

    @property
    def storage(self) -> FsspecStorage:
        """The storage under check (built by the first step)."""
        assert self._storage is not None
        return self._storage

    @property
    def _data_timeout(self) -> float:
        return self.timeout * 12

    # --- the steps ------------------------------------------------------------------------

    def _build(self) -> str:
        self._protocol = FsspecStorage(self.url, storage_options=self.options).location.protocol
        words = diagnostics_of(self._protocol)
        options = words.fail_fast(dict(self.options), self.timeout)
        if self.template is not None:
            FsspecStorage(self.url, router=self.template, storage_options=self.options)
        self._storage = FsspecStorage(
            self.url,
            storage_options=options,
            router=f"{PROBE_FOLDER}/{{content_hash}}",
            temp_prefix=self.temp_prefix,
            timeout=self._data_timeout,  # each backend call, probes' removal included
            # Chunks smaller than the stream: one that fits in its first chunk is a blob.
            chunk_size=min(DEFAULT_CHUNK_SIZE, max(1, self.stream_size // 2)),
        )
        self._endpoint = self.storage.location.spec.endpoint(
            self.storage.location.options
        )  # the URL's host too
        target = self.storage.location.filesystems()[1]
        kind = f"{type(target).__module__.split('.')[0]}.{type(target).__name__}"
        template = f", template {self.template!r} valid" if self.template else ""
        return f"{self.storage!r} via {kind}{template}"

    def _probe_endpoint(self) -> str | None:
        if not self._endpoint:
            return None  # local, memory, or the cloud's default endpoint: nothing to show
        host = urlsplit(self._endpoint if "://" in self._endpoint else f"//{self._endpoint}")
        proxies = urllib.request.getproxies()
        if proxies and not urllib.request.proxy_bypass(host.hostname or ""):
            return f"{self._endpoint} (through a proxy: not probed directly)"
        address = probe_endpoint(self._endpoint, min(self.timeout, 5.0))
        return f"{self._endpoint} accepts connections ({address})"

    def _list(self) -> str:
        found = self._run(self.storage.list_temp(), self.timeout, "listing the storage")
        stale = [path for path, age in found if age > _STALE]
        uploads = sum(path.kind == "upload" for path, _ in found)
        what = f"root listed, {len(found) - uploads} temp object(s)"
        if uploads:
            what += f" and {uploads} unfinished upload(s)"
        what += f" under {self.temp_prefix}/"
        if stale:
            what += f"; {len(stale)} older than a day: `lakery-fsspec gc` deletes them"
        return what

    def _write_blob(self) -> str:
        data = os.urandom(4096)
        digest: Digest = {
            "content_hash": hashlib.sha256(data).hexdigest(),
            "content_hash_algorithm": "sha256",
            "content_type": "application/octet-stream",
            "content_encoding": None,
            "content_size": len(data),
        }
        self._blob = (data, digest["content_hash"])
        pointer = self._run(
            self.storage.write_data(data, digest, {}), self._data_timeout, "writing a blob"
        )
        self._probes.append(pointer)
        return f"{human_size(len(data))} -> {_short(pointer['path'])}"

    def _write_stream(self) -> str:
        stream = FileStream(_RandomReader(self.stream_size))
        pointer = self._run(
            self.storage.write_data_stream(stream, stream.get_digest, {}),
            self._data_timeout,
            "streaming an object",
        )
        self._probes.append(pointer)
        self._stream_hash = stream.get_digest()["content_hash"]
        size = human_size(self.stream_size)
        return f"{size} via a temp object and a move -> {_short(pointer['path'])}"

    def _read_blob(self) -> str:
        data, expected = self._blob
        got = self._run(self.storage.read_data(self._probes[0]), self._data_timeout, "reading")
        _same("blob", expected, hashlib.sha256(got).hexdigest(), len(data), len(got))
        return f"{human_size(len(got))}, sha256 matches"

    def _read_stream(self) -> str:
        async def read() -> tuple[str, int, int]:
            digest, size, chunks = hashlib.sha256(), 0, 0
            async for chunk in self.storage.read_data_stream(self._probes[1]):
                digest.update(chunk)
                size += len(chunk)
                chunks += 1
            return digest.hexdigest(), size, chunks

        got, size, chunks = self._run(read(), self._data_timeout, "streaming a read")
        _same("stream", self._stream_hash, got, self.stream_size, size)
        return f"{human_size(size)} in {chunks} chunk(s), sha256 matches"

    def _no_temp_left(self) -> str:
        found = self._run(self.storage.list_temp(), self.timeout, "listing the storage")
        since_start = time.time() - self._started + 1
        ours = [path for path, age in found if age <= since_start]
        if ours:
            raise Problem(
                Diagnosis(
                    "temp-left",
                    f"A temp object created during the check is still there: {ours[0]}.",
                    "Another writer may be streaming right now; run the check again. If it "
                    "stays, the storage cannot delete after a move.",
                )
            )
        return f"nothing left under {self.temp_prefix}/"

    def _remove_probes(self) -> str:
        backend = self.storage._backends_for(self._protocol).target

        async def remove() -> list[str]:
            left: list[str] = []
            for path in self._probe_paths():
                await backend.remove(path)
                if await backend.exists(path):
                    left.append(path)
            return left

        left = self._run(remove(), self._data_timeout, "removing the probe objects")
        if left:
            raise Problem(
                Diagnosis(
                    "permission-denied",
                    f"A probe object could not be deleted: {left[0]}.",
                    "Grant these credentials permission to delete objects under the root.",
                )
            )
        count = len(self._probes)
        self._probes.clear()
        folder = f"{self.storage.location.root}/{PROBE_FOLDER}"
        self._run(backend.remove_folder(folder), self._data_timeout, "removing the probe folder")
        return f"{count} probe objects deleted"

    # --- helpers --------------------------------------------------------------------------

    def _probe_paths(self) -> list[str]:
        return [f"{p['root']}/{p['path']}" for p in self._probes]

    def _remove_probes_quietly(self) -> None:
        if not self._probes:
            return
        try:
            self._remove_probes()
        except Exception:  # the first failure is the one to report
            paths = ", ".join(self._probe_paths())
            self.echo(f"  (could not remove the probe objects: {paths})")


def _short(path: str) -> str:
    """``.lakery-check/<64 hex>`` -> ``.lakery-check/0123456789ab…``."""
    folder, _, name = path.rpartition("/")
    return f"{folder}/{name[:12]}…" if len(name) > 16 else path


class _RandomReader:
    """A file-like object of ``size`` random bytes, generated as they are read."""

    def __init__(self, size: int) -> None:
        self._left = size

    def read(self, size: int = -1) -> bytes:
        count = self._left if size < 0 else min(size, self._left)
        self._left -= count
        return os.urandom(count)


def _same(what: str, expected: str, got: str, size: int, got_size: int) -> None:
    if expected != got or size != got_size:
        raise Problem(
            Diagnosis(
                "corrupt",
                f"The {what} read back differs from what was written: {got_size} bytes with "
                f"sha256 {got[:16]}… where {size} bytes with sha256 {expected[:16]}… were written.",
                "Something between you and the storage changes data (a proxy, a cache "
                "layer, or a decoding client); check chained URLs and options.",
            )
        )
