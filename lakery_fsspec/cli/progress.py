"""A one-line progress bar on stderr, drawn only when stderr is a terminal."""

from __future__ import annotations

import shutil
import sys
import time
from types import TracebackType
from typing import TextIO

__all__ = ["Progress", "human_size"]


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
    terminal, so output piped or captured stays clean. Redraws at most ten times a second.
    """

    def __init__(
        self,
        label: str,
        total: int | None = None,
        *,
        stream: TextIO | None = None,
        enabled: bool | None = None,
    ) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = _isatty(self._stream) if enabled is None else enabled
        self._started = time.monotonic()
        self._drawn = 0.0
        self._closed = False
        self._note = ""

    def note(self, text: str) -> None:
        """Show ``text`` after the counts (e.g. "moving into place…") and redraw."""
        self._note = text
        if self.enabled:
            self._draw()

    def update(self, count: int) -> None:
        """Account for ``count`` more bytes."""
        self.done += count
        now = time.monotonic()
        if self.enabled and now - self._drawn >= 0.1:
            self._drawn = now
            self._draw()

    def clear(self) -> None:
        """Erase the bar, so that a line can be printed on the terminal; the next update
        draws it again below that line."""
        if self.enabled and not self._closed:
            width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
            self._stream.write("\r" + " " * width + "\r")
            self._stream.flush()
            self._drawn = 0.0

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self.enabled and not self._closed:
            self._note = ""
            self._draw()
            self._stream.write("\n")
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
        if not self.total:
            return f"{label} {human_size(self.done)}  {speed}  {status}"[:width]
        fraction = min(self.done / self.total, 1.0)
        if fraction < 1 and not self._note:
            status = "ETA " + _duration((self.total - self.done) / rate if rate > 0 else 0.0)
        sizes = f"{human_size(self.done)}/{human_size(self.total)}"
        head, tail = f"{label} {fraction:4.0%} ", f" {sizes}  {speed}  {status}"
        bar_width = min(30, width - len(head) - len(tail) - 2)
        filled = int(bar_width * fraction)
        bar = f"[{'#' * filled}{'.' * (bar_width - filled)}]" if bar_width >= 5 else ""
        return f"{head}{bar}{tail}"[:width]

    def _draw(self) -> None:
        width = max(20, shutil.get_terminal_size((80, 24)).columns - 1)
        self._stream.write("\r" + self.line(width).ljust(width))
        self._stream.flush()


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
