"""Routers: turn a digest and tags into an object path relative to the storage root."""

from __future__ import annotations

import string
from collections.abc import Callable, Iterator, Mapping
from mimetypes import MimeTypes
from typing import TYPE_CHECKING, TypeAlias

from lakery_fsspec._paths import path_problem

if TYPE_CHECKING:
    from labox.common.types import TagMap
    from labox.core.storage import Digest

__all__ = ["DEFAULT_TEMPLATE", "FIELDS", "PathTemplate", "Router", "make_router", "route"]

Router: TypeAlias = Callable[["Digest", "TagMap"], str]
"""A callable router: ``(digest, tags) -> path relative to the storage root``."""

DEFAULT_TEMPLATE = "{content_hash:.2}/{content_hash}{extension}"
"""Shard by the first two characters of the hash, keep the content type's extension."""

FIELDS = (
    "content_hash",
    "content_hash_algorithm",
    "content_type",
    "content_encoding",
    "content_size",
    "extension",
    "tags[NAME]",
)
"""The fields a path template may reference."""

_DIGEST_FIELDS = frozenset(FIELDS) - {"tags[NAME]"}
# A private table, not the process-wide one, so that extensions do not depend on the
# machine's /etc/mime.types: the same content must route to the same path everywhere.
_MIME_TYPES = MimeTypes()


def content_type_of(path: str) -> str:
    """The content type a path's extension names (as templates render ``{extension}``),
    else ``application/octet-stream``."""
    return _MIME_TYPES.guess_type(path)[0] or "application/octet-stream"


class PathTemplate:
    """A router rendered from a ``str.format`` template, validated when it is created.

    >>> PathTemplate("{tags[team]}/{content_hash}{extension}")
    PathTemplate('{tags[team]}/{content_hash}{extension}')
    """

    def __init__(self, template: str) -> None:
        if not isinstance(template, str):  # pyright: ignore[reportUnnecessaryIsInstance]
            msg = f"A path template must be a str, not {type(template).__name__}."
            raise TypeError(msg)
        self.template = template
        self.tag_names = frozenset(_parse_tag_names(template))
        _check_renders_uniquely(self)

    def __call__(self, digest: Digest, tags: TagMap, /) -> str:
        """Render the path for ``digest`` and ``tags``; raise ValueError if it is unsafe."""
        missing = sorted(self.tag_names - set(tags))
        if missing:
            msg = (
                f"Path template {self.template!r} needs tag(s) {', '.join(map(repr, missing))}"
                f" but the write has only {sorted(tags)}; pass them as tags when saving."
            )
            raise ValueError(msg)
        path = self._render(digest, tags)
        if problem := path_problem(path):
            culprits = [name for name in sorted(self.tag_names) if self._blames(name, digest, tags)]
            what = f"tag {culprits[0]!r} = {tags[culprits[0]]!r}" if culprits else "the digest"
            msg = f"Path template {self.template!r} with {what} renders {path!r}: {problem}."
            raise ValueError(msg)
        return path

    def __repr__(self) -> str:
        return f"PathTemplate({self.template!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PathTemplate) and other.template == self.template

    def __hash__(self) -> int:
        return hash(self.template)

    def _render(self, digest: Digest, tags: TagMap) -> str:
        encoding = digest["content_encoding"] or ""
        return self.template.format(
            content_hash=digest["content_hash"],
            content_hash_algorithm=digest["content_hash_algorithm"],
            content_type=digest["content_type"],
            content_encoding=encoding,
            content_size=digest["content_size"],
            extension=_MIME_TYPES.guess_extension(digest["content_type"]) or "",
            tags=_Tags(tags),
        )

    def _blames(self, name: str, digest: Digest, tags: TagMap) -> bool:
        """Whether replacing tag ``name`` with a harmless value makes the path safe."""
        return path_problem(self._render(digest, {**tags, name: "x"})) is None


def route(router: Router, digest: Digest, tags: TagMap) -> str:
    """Call ``router`` and check that what it returns is a safe relative path."""
    path = router(digest, tags)
    if not isinstance(router, PathTemplate) and (problem := path_problem(path)):
        msg = f"Router {router!r} returned {path!r}, which is not a safe relative path: {problem}."
        raise ValueError(msg)
    return path


class _Tags(Mapping[str, str]):
    """Tag lookup for ``str.format``; ``{tags[0]}`` asks for the key 0, not "0"."""

    def __init__(self, tags: TagMap) -> None:
        self._tags = tags

    def __getitem__(self, key: object) -> str:
        return self._tags[str(key)]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tags)

    def __len__(self) -> int:
        return len(self._tags)


def _parse_tag_names(template: str) -> Iterator[str]:
    """Yield the tag names a template uses; raise ValueError on anything not allowed."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as error:
        raise _template_error(template, f"it is not a valid format string ({error})") from None
    for _, field, spec, _ in parsed:
        if field is None:
            continue
        if spec and "{" in spec:
            raise _template_error(template, f"field {field!r} has a nested field in its spec")
        if field in _DIGEST_FIELDS:
            continue
        name = field.removeprefix("tags[").removesuffix("]")
        if (
            field.startswith("tags[")
            and field.endswith("]")
            and name
            and not set("[].") & set(name)
        ):
            if name.isdecimal() and str(int(name)) != name:
                # str.format looks up {tags[007]} as tags[7]: the tag "007" is unreachable.
                why = f"str.format reads {{{field}}} as {{tags[{int(name)}]}}"
                raise _template_error(template, why)
            yield name
            continue
        raise _template_error(template, f"it references {'{' + field + '}'}")


def _check_renders_uniquely(template: PathTemplate) -> None:
    """Render sample digests to catch bad specs, unsafe paths and truncated hashes."""
    tags = dict.fromkeys(template.tag_names, "tag")
    paths: list[str] = []
    for content_hash in ("0" * 63 + "a", "0" * 63 + "b"):
        digest: Digest = {
            "content_hash": content_hash,
            "content_hash_algorithm": "sha256",
            "content_type": "application/json",
            "content_encoding": None,
            "content_size": 1,
        }
        try:
            paths.append(template._render(digest, tags))  # pyright: ignore[reportPrivateUsage]
        except (ValueError, TypeError) as error:
            raise _template_error(template.template, f"it does not render ({error})") from None
    if problem := path_problem(paths[0]):
        raise _template_error(template.template, f"it renders {paths[0]!r}: {problem}")
    if paths[0] == paths[1]:
        why = "it does not include the whole {content_hash}, so different contents would collide"
        raise _template_error(template.template, why)


def _template_error(template: str, why: str) -> ValueError:
    allowed = ", ".join("{" + field + "}" for field in FIELDS)
    return ValueError(
        f"Invalid path template {template!r}: {why}. Templates use str.format syntax over "
        f"these fields only: {allowed}; format specs such as {{content_hash:.2}} are allowed "
        "and {content_hash} must appear in full."
    )


def make_router(router: str | Router | None) -> Router | None:
    """Accept a template string, a callable router or None (read-only)."""
    if router is None or isinstance(router, PathTemplate):
        return router
    if isinstance(router, str):
        return PathTemplate(router)
    if callable(router):
        return router
    msg = (
        f"router must be a path template string, a callable (digest, tags) -> str or None, "
        f"not {type(router).__name__}."
    )
    raise ValueError(msg)
