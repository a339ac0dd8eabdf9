"""Validation of the relative paths that routers return and pointers carry."""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import unquote

__all__ = ["path_problem"]

_SEGMENT_PROBLEMS = {"": "an empty segment", ".": "a '.' segment", "..": "a '..' segment"}
_DECODE_ROUNDS = 6
"""How many layers of percent-encoding and Unicode normalisation are peeled off."""


def path_problem(path: object) -> str | None:
    """Say what makes ``path`` unsafe as an object path below a root, or None if it is safe.

    A safe path is a non-empty relative ``/``-separated path with no empty, ``.`` or ``..``
    segments, no backslash, no control characters and no ``scheme://``. Segments made
    only of dots and spaces are refused too (Windows trims ``.. `` into ``..``). Each
    segment is also checked after percent-decoding and Unicode NFKC normalisation,
    applied in any order and repeatedly, so that a backend which decodes either (even
    twice) cannot turn a harmless-looking segment into a traversal.
    """
    if not isinstance(path, str):
        return f"it is a {type(path).__name__}, not a string"
    if not path:
        return "it is empty"
    if path.startswith("/"):
        return "it is absolute (starts with '/')"
    if "\\" in path:
        return "it contains a backslash"
    if _has_control(path):
        return "it contains a control character"
    if "://" in path:
        return "it contains '://'"
    for segment in path.split("/"):
        if problem := _segment_problem(segment):
            return f"it has {problem}"
        if segment.isascii() and "%" not in segment:
            continue  # nothing to decode
        decodings = _decodings(segment)
        if decodings is None:
            return f"segment {segment!r} is encoded more than {_DECODE_ROUNDS} times over"
        for decoded in decodings:
            if problem := _decoded_problem(decoded):
                return f"segment {segment!r} decodes to {problem}"
    return None


def _segment_problem(segment: str) -> str | None:
    if problem := _SEGMENT_PROBLEMS.get(segment):
        return problem
    if not segment.rstrip(". "):
        return f"a segment of only dots and spaces ({segment!r}), which Windows reads as '..'"
    return None


def _decodings(segment: str) -> list[str] | None:
    """What percent-decoding and NFKC make of ``segment``, in any order, several times;
    None if it still decodes further after that many rounds (nothing legitimate does)."""
    seen = {segment}
    found: list[str] = []
    frontier = [segment]
    for _ in range(_DECODE_ROUNDS):
        frontier = [
            decoded
            for variant in frontier
            for decoded in {unquote(variant), unicodedata.normalize("NFKC", variant)}
            if decoded not in seen
        ]
        if not frontier:
            return found
        seen.update(frontier)
        found += frontier
    return None


def _decoded_problem(decoded: str) -> str | None:
    if "/" in decoded or "\\" in decoded:
        return "a path separator"
    if _has_control(decoded):
        return "a control character"
    return _segment_problem(decoded)


# Unicode categories Cc (C0 and C1 controls) and Cs (lone surrogates), as one regex.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _has_control(text: str) -> bool:
    return _CONTROL.search(text) is not None
