"""Reading a path template backwards: the hash (and size, algorithm) a rendered path holds."""

from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import TYPE_CHECKING

from lakery_fsspec._integrity import hasher

if TYPE_CHECKING:
    from lakery_fsspec._router import PathTemplate

__all__ = ["Expected", "PathMatcher"]

_HEX = "[0-9a-fA-F]"
_ALGORITHM = "[A-Za-z0-9_-]+"
_PREFIX_SPEC = re.compile(r"\.(\d+)s?")
"""A precision spec on a string, ``{content_hash:.2}``: the first characters."""
_EXTENSION = r"(?:\.[^/]*?)?"
"""``{extension}``: nothing, or a dot and what follows it in the segment."""
_SEGMENT_TEXT = "[^/]*?"
"""``{content_encoding}``: never holds a ``/``."""
_ANY_TEXT = ".*?"
"""Fields that may span folders: tags (``team/a``), content types, odd format specs."""


@dataclass(frozen=True)
class Expected:
    """What a path says about its object: the content hash, and size and hash algorithm
    where the template records them (None where it does not)."""

    content_hash: str
    algorithm: str | None
    size: int | None


class PathMatcher:
    """Matches paths a :class:`PathTemplate` renders and recovers their :class:`Expected`.

    ``{content_hash}`` is captured (hex, of the default algorithm's length unless the
    template names the algorithm), ``{content_hash:.N}`` must be its first N characters,
    ``{content_size}`` and ``{content_hash_algorithm}`` are captured, repeated fields and
    tags must repeat the same text, tags may span folders, ``{extension}`` is empty or
    starts with a dot, and the other fields match any text. A path the template cannot
    have made does not match: with the default template, ``ab/ab12…(64 hex digits).json``
    gives the hash ``ab12…``, while ``cd/ab12….json`` and ``notes.txt`` give None.
    """

    def __init__(self, template: PathTemplate, default_algorithm: str = "sha256") -> None:
        self.template = template
        self.default_algorithm = default_algorithm
        self._prefixes: dict[str, int] = {}  # group name -> characters of the hash it holds
        self._pattern = re.compile(self._build(template.template, default_algorithm), re.DOTALL)

    def match(self, path: str) -> Expected | None:
        """What ``path`` says about its object, or None if the template cannot render it."""
        found = self._pattern.fullmatch(path)
        if found is None:
            return None
        content_hash = found["content_hash"]
        for group, length in self._prefixes.items():
            if found[group] != content_hash[:length]:
                return None
        groups = found.groupdict()
        size = groups.get("content_size")
        return Expected(
            content_hash=content_hash,
            algorithm=groups.get("content_hash_algorithm"),
            size=None if size is None else int(size),
        )

    def __repr__(self) -> str:
        return f"PathMatcher({self.template!r})"

    def _build(self, template: str, default_algorithm: str) -> str:
        parsed = list(string.Formatter().parse(template))
        fields = {field for _, field, _, _ in parsed}
        if not any(f == "content_hash" and not s and c is None for _, f, s, c in parsed):
            msg = (
                f"Cannot read hashes back from paths of template {template!r}: it has no plain "
                "{content_hash} (without a format spec or conversion). Pass pointers to verify."
            )
            raise ValueError(msg)
        hash_pattern = f"{_HEX}+"
        if "content_hash_algorithm" not in fields:
            digest = hasher(default_algorithm)
            if digest is not None:  # a fixed length tells a hash from what follows it
                hash_pattern = f"{_HEX}{{{2 * digest.digest_size}}}"
        captured: set[str] = set()
        tag_groups: dict[str, str] = {}
        parts: list[str] = []
        for literal, field, spec, conversion in parsed:
            parts.append(re.escape(literal))
            if field is None:
                continue
            plain = not spec and conversion is None
            if (
                field == "content_hash"
                and conversion is None
                and (prefix := _PREFIX_SPEC.fullmatch(spec or ""))
            ):
                group = f"prefix{len(self._prefixes)}"
                self._prefixes[group] = int(prefix.group(1))
                parts.append(f"(?P<{group}>{_HEX}{{0,{int(prefix.group(1))}}})")
            elif plain and field in ("content_hash", "content_hash_algorithm", "content_size"):
                if field in captured:
                    parts.append(f"(?P={field})")
                else:
                    captured.add(field)
                    pattern = {
                        "content_hash": hash_pattern,
                        "content_hash_algorithm": _ALGORITHM,
                        "content_size": "[0-9]+",
                    }[field]
                    parts.append(f"(?P<{field}>{pattern})")
            elif plain and field.startswith("tags["):
                if field in tag_groups:
                    parts.append(f"(?P={tag_groups[field]})")
                else:
                    group = tag_groups[field] = f"tag{len(tag_groups)}"
                    parts.append(f"(?P<{group}>{_ANY_TEXT})")
            elif plain and field == "extension":
                parts.append(_EXTENSION)
            elif plain and field == "content_encoding":
                parts.append(_SEGMENT_TEXT)
            else:
                parts.append(_ANY_TEXT)
        return "".join(parts)
