"""Validation of the relative paths that routers return and pointers carry."""

from __future__ import annotations

import unicodedata
from urllib.parse import unquote

__all__ = ["path_problem"]

_SEGMENT_PROBLEMS = {"": "an empty segment", ".": "a '.' segment", "..": "a '..' segment"}


def path_problem(path: object) -> str | None:
    """Say what makes ``path`` unsafe as an object path below a root, or None if it is safe.

    A safe path is a non-empty relative ``/``-separated path with no empty, ``.`` or ``..``
    segments, no backslash, no control characters and no ``scheme://``. Segments are also
    checked after percent-decoding and Unicode NFKC normalisation, so that a backend which
    decodes either cannot turn a harmless-looking segment into a traversal.
    """
    if not isinstance(path, str):
        return f"it is a {type(path).__name__}, not a string"
    if not path:
        return "it is empty"
    if path.startswith("/"):
        return "it is absolute (starts with '/')"
    if "\\" in path:
        return "it contains a backslash"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in path):
        return "it contains a control character"
    if "://" in path:
        return "it contains '://'"
    for segment in path.split("/"):
        if problem := _SEGMENT_PROBLEMS.get(segment):
            return f"it has {problem}"
        decoded = unicodedata.normalize("NFKC", unquote(segment))
        if decoded != segment and (problem := _decoded_problem(decoded)):
            return f"segment {segment!r} decodes to {problem}"
    return None


def _decoded_problem(decoded: str) -> str | None:
    if decoded in _SEGMENT_PROBLEMS:
        return _SEGMENT_PROBLEMS[decoded]
    if "/" in decoded or "\\" in decoded:
        return "a path separator"
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in decoded):
        return "a control character"
    return None
