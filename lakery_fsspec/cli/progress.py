"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import shutil
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

__all__ = ["WAIT_NOTICE", "Progress", "human_size"]

WAIT_NOTICE = 2.0
"""Seconds without a byte after which a bar on a terminal says it is waiting."""


def human_size(size: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(size) < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


class Progress:
    """Counts bytes and redraws ``label  42% [####....] 84.0/200.0 MiB  31.2 MiB/s  ETA 4s``.

    Quiet (counting only) unless ``enabled``, which defaults to whether ``stream`` is a
    terminal, so output piped or captured stays clean. Redraws at most ten times a second,
    and while no byte has come for WAIT_NOTICE seconds it says that it is waiting, and on
    what (``waiting_on``: the storage's URL).
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        waiting_on: str = "the storage",
    ) -> None:
        self.label = label
        self.waiting_on = waiting_on
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self._stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0
        self._closed = False
        self._note = ""
        self._moved = self._started
        self._lock = threading.Lock()
        self._stop = threading.Event()
        if self.enabled:
            threading.Thread(target=self._tick, name="progress", daemon=True).start()

    def note(self, text: str) -> None:
        """Show ``text`` after the counts (e.g. "moving into place…") and redraw."""
        self._note = text
        if self.enabled:
            self._draw()

    def update(self, count: int) -> None:
        """Account for ``count`` more bytes."""
        self.done += count
        now = self._moved = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def clear(self) -> None:
        """Erase the bar, so that a line can be printed on the terminal; the next update
        draws it again below that line."""
        if self.enabled and not self._closed:
            width = _width()
            with self._lock:
                self._stream.write("\r" + " " * width + "\r")
                self._stream.flush()
            self._drawn = 0.0

    def close(self) -> None:
        """Draw the final state and end the line; a bar that counted nothing (a wait
        only) is erased instead."""
        self._stop.set()
        if self.enabled and not self._closed:
            self._note = ""
            self._moved = time.monotonic()
            width = _width()
            if self.total or self.done:
                last = "\r" + self.line(width).ljust(width) + "\n"
            else:
                last = "\r" + " " * width + "\r"
            with self._lock:
                self._closed = True
                self._stream.write(last)
                self._stream.flush()
        self._closed = True

    def __enter__(self) -> Progress:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def line(self, width: int) -> str:
        """The progress line, fitted to ``width`` columns."""
        elapsed = max(time.monotonic() - self._started, 1e-6)
        rate = self.done / elapsed
        speed = f"{human_size(rate)}/s"
        label = _shorten(self.label, 24)
        status = self._note or _duration(elapsed)
        idle = time.monotonic() - self._moved
        if idle >= WAIT_NOTICE:
            doing = f": {self._note}" if self._note else ""
            status = f"waiting for {self.waiting_on}{doing} ({_duration(idle)})"
        if not self.total and not self.done:
            return f"{label}  {status}"[:width]
        if not self.total:
            return f"{label} {human_size(self.done)}  {speed}  {status}"[:width]
        fraction = min(self.done / self.total, 1.0)
        if fraction < 1 and not self._note and idle < WAIT_NOTICE:
            status = "ETA " + _duration((self.total - self.done) / rate if rate > 0 else 0.0)
        sizes = f"{human_size(self.done)}/{human_size(self.total)}"
        head, tail = f"{label} {fraction:4.0%} ", f" {sizes}  {speed}  {status}"
        bar_width = min(30, width - len(head) - len(tail) - 2)
        filled = int(bar_width * fraction)
        bar = f"[{'#' * filled}{'.' * (bar_width - filled)}]" if bar_width >= 5 else ""
        return f"{head}{bar}{tail}"[:width]

    def _draw(self) -> None:
        width = _width()
        with self._lock:
            if not self._closed:
                self._stream.write("\r" + self.line(width).ljust(width))
                self._stream.flush()

    def _tick(self) -> None:
        """Redraw while nothing moves, so that a wait shows as one."""
        while not self._stop.wait(0.5):
            if time.monotonic() - self._moved >= WAIT_NOTICE:
                self._draw()


def _width() -> int:
    return max(20, shutil.get_terminal_size((80, 24)).columns - 1)


def _shorten(text: str, width: int) -> str:
    if len(text) <= width:
        return text
    half = (width - 1) // 2
    return f"{text[:half]}…{text[-(width - 1 - half) :]}"


def _duration(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
