"""Where a moved lake's objects are now: old locations mapped to new ones, compared by
their canonical protocol and root (``s3a://b/lake/`` is ``s3://b/lake``)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import NamedTuple

from lakery_fsspec._location import Location, canonical_or_as_is
from lakery_fsspec._pointer import FsspecPointer

__all__ = ["Place", "Relocations", "rerooted"]


class Place(NamedTuple):
    """A root as a pointer records it: the canonical protocol and the root's path."""

    protocol: str
    root: str

    def __str__(self) -> str:
        return f"{self.protocol}://{self.root}"

    def holds(self, protocol: str, root: str) -> str | None:
        """The part of ``root`` below this place ("" for this place itself), or None if
        ``protocol://root`` is not this place or inside it."""
        if protocol != self.protocol:
            return None
        mine, theirs = self.root.rstrip("/"), root.rstrip("/")
        if theirs == mine:
            return ""
        if theirs.startswith(mine + "/"):
            return theirs[len(mine) + 1 :]
        return None


class Relocations:
    """``{OLD: NEW}`` storage URLs (or local paths), each resolved as a storage resolves
    its own URL. A pointer whose root is an old place, or inside one, is read from the
    new place (the most specific old place wins); ValueError names a bad entry, or one
    whose new protocol is not ``readable``."""

    def __init__(
        self,
        relocated: Mapping[str | os.PathLike[str], str | os.PathLike[str]] | None,
        *,
        readable: Callable[[str], bool] = lambda protocol: True,
    ) -> None:
        if relocated is not None and not isinstance(relocated, Mapping):  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = (
                f"relocated must map old storage URLs to new ones, e.g. "
                f"{{'s3://old-bucket/lake': 's3://new-bucket/lake'}}, not {relocated!r}."
            )
            raise ValueError(msg)
        entries: list[tuple[Place, Place]] = []
        for old_url, new_url in (relocated or {}).items():
            old, new = _place(old_url, old_url, new_url), _place(new_url, old_url, new_url)
            if old == new:
                raise _entry_error(old_url, new_url, f"both name {old}; leave it out")
            if not readable(new.protocol):
                why = (
                    f"this storage may not read {new.protocol!r} objects; add "
                    f"read_options={{{new.protocol!r}: {{...}}}} with the options to read them"
                )
                raise _entry_error(old_url, new_url, why)
            for known, _ in entries:
                if known == old:
                    why = f"its old location is {old}, as another entry's is; keep one of them"
                    raise _entry_error(old_url, new_url, why)
            entries.append((old, new))
        # The most specific old place first: a lake inside a moved bucket may have moved
        # on its own.
        self.entries = tuple(sorted(entries, key=lambda entry: -len(entry[0].root)))

    def __bool__(self) -> bool:
        return bool(self.entries)

    def place_of(self, pointer: FsspecPointer) -> tuple[Place, Place | None]:
        """The root ``pointer``'s object is under now, and the old place it matched (None:
        not relocated, the recorded root itself, its protocol spelled canonically)."""
        protocol, root = canonical_or_as_is(pointer["protocol"]), pointer["root"]
        for old, new in self.entries:
            below = old.holds(protocol, root)
            if below is not None:
                moved = f"{new.root.rstrip('/')}/{below}" if below else new.root
                return Place(new.protocol, moved), old
        return Place(protocol, root), None

    def new_places(self) -> list[Place]:
        """The new place of every entry."""
        return [new for _, new in self.entries]


def rerooted(pointer: FsspecPointer, place: Place) -> FsspecPointer:
    """``pointer`` with its object under ``place``, same relative path."""
    return {**pointer, "protocol": place.protocol, "root": place.root}


def _place(url: object, old_url: object, new_url: object) -> Place:
    if not isinstance(url, str | os.PathLike):
        raise _entry_error(old_url, new_url, f"{url!r} is not a URL or a local path")
    try:
        location = Location(url, {})
    except ValueError as error:
        raise _entry_error(old_url, new_url, str(error).rstrip(".")) from None
    return Place(location.protocol, location.root)


def _entry_error(old_url: object, new_url: object, why: str) -> ValueError:
    return ValueError(
        f"relocated entry {_shown(old_url)} -> {_shown(new_url)}: {why}. Each entry maps "
        "the URL (or local path) the lake was written to onto the URL it is at now, e.g. "
        "{'./old-lake': './lake'} or {'s3://old-bucket/lake': 'gs://new-bucket/lake'}."
    )


def _shown(url: object) -> str:
    return repr(str(url) if isinstance(url, os.PathLike) else url)
