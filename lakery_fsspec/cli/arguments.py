"""Which argument is the URL and which are files, and URLs a user most likely mistyped."""

from __future__ import annotations

import re
from pathlib import Path

import fsspec

from lakery_fsspec.cli.errors import UsageError

__all__ = ["PUT_RULE", "check_url", "has_scheme", "split_put_paths"]

PUT_RULE = (
    "An argument that is an existing file is a FILE; one with a scheme (s3://…) or an "
    "existing directory is the URL; '-' is standard input. With no argument at all, put "
    "reads standard input into the default lake."
)

_HALF_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):(/?)(?!/)(.*)", re.DOTALL)


def has_scheme(text: str) -> bool:
    """Whether ``text`` is a URL (``s3://…``, ``simplecache::s3://…``), not a local path."""
    return "://" in text or "::" in text


def check_url(url: str) -> str:
    """``url`` itself, or UsageError for a URL with a known scheme and too few slashes
    (``s3:/bucket``, ``gs:bucket``), which would otherwise name a local folder."""
    if has_scheme(url):
        return url
    match = _HALF_SCHEME.fullmatch(url)
    if match and match.group(1).lower() in fsspec.available_protocols():
        scheme, rest = match.group(1), match.group(3)
        msg = (
            f"{url!r} is not a URL (a scheme is followed by '://'): did you mean "
            f"{scheme}://{rest}? To name a local folder with ':' in it, write ./{url}"
        )
        raise UsageError(msg)
    return url


def split_put_paths(paths: list[str], default: str) -> tuple[str, list[str]]:
    """``put [URL] FILE...`` -> the URL and the files (``-`` is standard input), by
    PUT_RULE; UsageError for a lone argument that is none of those things."""
    if not paths:
        return default, ["-"]
    first, rest = paths[0], paths[1:]
    if first == "-" or Path(first).is_file():
        return default, paths
    if not rest and not (has_scheme(first) or Path(first).is_dir()):
        check_url(first)
        msg = (
            f"no such file: {first!r}. To store standard input into a new lake folder, "
            f"write `put {_as_folder(first)} -`."
        )
        raise UsageError(msg)
    for name in rest:
        if name != "-" and not Path(name).is_file():
            why = "is a directory" if Path(name).is_dir() else "no such file"
            raise UsageError(f"{name!r}: {why} (put stores files)")
    return check_url(first), rest or ["-"]


def _as_folder(name: str) -> str:
    return name if name.startswith(("/", "./", "../")) else f"./{name}"
