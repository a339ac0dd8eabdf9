"""The journal of a long ``lakery-fsspec verify`` or ``copy`` run, to resume it from.

A JSON-lines file: a header naming the run (URL, pointers or walk, sample and seed),
then one line per object checked, written as each check finishes, with where the run
could resume at that moment. Reading it back gives that resume point, the few objects
checked beyond it (checks finish out of order), the problems found so far and counts,
so memory stays bounded however many objects the journal lists.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

from lakery_fsspec._verify import ALL_KINDS, Checked, Problem, walk_key

__all__ = ["Journal", "JournalError"]

_MARK = "lakery-fsspec verify journal"


class JournalError(ValueError):
    """The file is not a journal of this run."""


class Journal:
    """Records checked objects; opened on an existing file, resumes the run it records.

    ``header`` describes the run (JSON-able); a file whose header differs belongs to
    another run and is refused. After opening: ``after`` (walks) and ``handled``
    (pointers) say where to resume, ``skip`` holds the URLs checked beyond that point,
    and ``problems``, ``checked`` and ``bytes`` what earlier runs found.
    """

    def __init__(self, path: str | os.PathLike[str], header: dict[str, Any]) -> None:
        self.path = Path(path)
        self.after: str | None = None
        self.handled = 0
        self.skip: set[str] = set()
        self.problems: list[Problem] = []
        self.checked = 0
        self.bytes = 0
        self.done: Counter[str] = Counter()
        """Objects by what was done (``Checked.done``: a copy's ``copied``, ``present``)."""
        self.landed: set[str] = set()
        """A copy journal with ``"rewrite"`` in its header: the relative paths of the
        objects verified at the destination (one string per object in memory)."""
        self._header = {"journal": _MARK, **header}
        self._offset_after: str | None = None
        self._offset_handled = 0
        if self.path.exists() and self.path.stat().st_size:
            self._load()
            _drop_partial_line(self.path)  # cut short by a crash: never recorded
        self._offset_after, self._offset_handled = self.after, self.handled
        self._file: TextIO = self.path.open("a", encoding="utf-8")
        if self.path.stat().st_size == 0:
            self._write(self._header)

    def record(self, checked: Checked) -> None:
        """Append one checked object (flushed at once: a crash loses nothing before it)."""
        problem = checked.problem
        self._write(
            {
                "url": checked.url,
                "path": checked.path,
                "index": self._offset_handled + checked.index,
                "size": checked.size,
                "problem": None
                if problem is None
                else {"kind": problem.kind, "detail": problem.detail},
                "handled": self._offset_handled + checked.handled,
                "after": checked.after if checked.after is not None else self._offset_after,
                "done": checked.done,
            }
        )

    def close(self) -> None:
        """Close the file."""
        self._file.close()

    def _write(self, line: dict[str, Any]) -> None:
        self._file.write(json.dumps(line, separators=(",", ":")) + "\n")
        self._file.flush()

    def _load(self) -> None:
        lines = self._lines()
        header = next(lines, None)
        if header is None:
            return  # a header cut short by a crash: nothing recorded yet
        if header != self._header:
            raise JournalError(
                f"{self.path} is not the journal of this run: it records "
                f"{_describe(header)}, this run is {_describe(self._header)}. Resume with the "
                "same URL and options, or give another file."
            )
        for line in lines:  # first pass: where the run got to, what it found
            self.checked += 1
            self.bytes += int(line["size"])
            self.handled = int(line["handled"])
            self.after = line["after"]
            self.done[str(line.get("done", "checked"))] += 1
            if self._header.get("rewrite") and line.get("done") in ("copied", "present"):
                self.landed.add(line["path"])
            if (problem := line["problem"]) is not None and line.get("done") != "repaired":
                self.problems.append(Problem(problem["kind"], line["url"], problem["detail"]))
        beyond = walk_key(self.after) if self.after is not None else None
        lines = self._lines()
        next(lines)
        for line in lines:  # second pass: what was checked beyond that point
            if self._header.get("mode") == "walk":
                if beyond is None or walk_key(line["path"]) > beyond:
                    self.skip.add(line["url"])
            elif int(line["index"]) >= self.handled:
                self.skip.add(line["url"])

    def _lines(self) -> Iterator[dict[str, Any]]:
        with self.path.open(encoding="utf-8") as file:
            previous: str | None = None
            number = 0
            for text in file:
                if previous is not None:
                    yield self._parse(previous, number, last=False)
                previous, number = text, number + 1
            if previous is not None and (line := self._parse(previous, number, last=True)):
                yield line

    def _parse(self, text: str, number: int, *, last: bool) -> dict[str, Any]:
        try:
            line = json.loads(text)
            if number > 1:
                _check_line(line)
        except (ValueError, KeyError, TypeError):
            if last and not text.endswith("\n"):
                return {}  # cut short by a crash while it was written: never recorded
            raise JournalError(
                f"{self.path} line {number} is not a verify journal line: {text[:200]!r}. "
                "Give another file to --resume."
            ) from None
        return line


T = TypeVar("T")


def journaled(
    resume: str | os.PathLike[str] | None,
    header: dict[str, Any],
    work: Callable[[Journal | None], Coroutine[Any, Any, T]],
) -> tuple[T, Journal | None]:
    """Run ``work`` on a new event loop with the journal at ``resume`` (None: none): the
    problems an earlier run recorded are printed first, an interruption says how to go on,
    and the journal is closed whatever happens."""
    journal = Journal(resume, header) if resume else None
    try:
        for problem in journal.problems if journal else []:
            print(problem, flush=True)
        return asyncio.run(work(journal)), journal
    except KeyboardInterrupt:
        if journal is not None:
            print(f"run the same command to go on from {journal.path}", file=sys.stderr)
        raise
    finally:
        if journal is not None:
            journal.close()


def _drop_partial_line(path: Path) -> None:
    """Truncate the file after its last newline."""
    with path.open("rb+") as file:
        end = file.seek(0, os.SEEK_END)
        position = end
        while position > 0:
            step = min(position, 4096)
            file.seek(position - step)
            newline = file.read(step).rfind(b"\n")
            if newline >= 0:
                position = position - step + newline + 1
                break
            position -= step
        if position != end:
            file.truncate(position)


def _check_line(line: Any) -> None:
    if not isinstance(line, dict):
        raise TypeError(line)
    for key, kind in (("url", str), ("path", str), ("index", int), ("size", int)):
        if not isinstance(line[key], kind):
            raise TypeError(key)
    problem = line["problem"]
    if problem is not None and problem["kind"] not in ALL_KINDS:
        raise ValueError(problem)


def _describe(header: Any) -> str:
    if not isinstance(header, dict) or header.get("journal") != _MARK:
        return "something else"
    shown = {key: value for key, value in header.items() if key != "journal"}
    return ", ".join(f"{key}={value!r}" for key, value in shown.items())
