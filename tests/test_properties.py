"""Hostile input, property-based: rendered paths and pointers never escape the root.

The oracle below is written independently of `lakery_fsspec._paths`: it decodes a path
every way a backend might (percent-decoding, Unicode NFKC, in any order and repeatedly,
backslashes as separators, Windows' trimming of trailing dots and spaces) and looks for
a traversal in any of the results. Whatever the package accepts must pass it, and
whatever it refuses must be refused with a ValueError that has a message.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import string
import unicodedata
from typing import Any
from urllib.parse import unquote

import fsspec
import pytest
from helpers import digest_of
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from labox.common.exceptions import NoStorageData

from lakery_fsspec import FsspecStorage, PathTemplate
from lakery_fsspec._paths import path_problem

SCALE = float(os.environ.get("LAKERY_HYPOTHESIS_SCALE", "1"))
"""Multiplies every example count below (e.g. 20 for a long soak run)."""


def examples(count: int) -> settings:
    """Hypothesis settings for ``count`` examples (times SCALE); the file takes ~20 s."""
    return settings(
        max_examples=int(count * SCALE),
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )


# --- the oracle -----------------------------------------------------------------------


def decodings(text: str, rounds: int = 6) -> set[str]:
    """Every string a backend could make of ``text`` by percent-decoding and NFKC
    normalisation, applied in any order, up to ``rounds`` times."""
    seen = {text}
    frontier = {text}
    for _ in range(rounds):
        frontier = {
            decoded
            for variant in frontier
            for decoded in (unquote(variant), unicodedata.normalize("NFKC", variant))
        } - seen
        if not frontier:
            break
        seen |= frontier
    return seen


def escapes(path: str) -> str | None:
    """Why ``path``, below a root, could reach outside it or confuse a backend; or None."""
    for variant in decodings(path):
        if variant.startswith(("/", "\\")):
            return f"{variant!r} is absolute"
        if any(unicodedata.category(char) in ("Cc", "Cs") for char in variant):
            return f"{variant!r} has a control character"
        if "://" in variant:
            return f"{variant!r} holds a URL"
        for segment in re.split(r"[/\\]", variant):
            # "", ".", "..", and what Windows trims into them ("..", ". .", "...").
            if not segment.rstrip(". "):
                return f"{variant!r} has the segment {segment!r}"
    return None


# --- strategies -----------------------------------------------------------------------

HOSTILE_PIECES = [
    ".",
    "..",
    "/",
    "\\",
    " ",
    "%",
    "%2e",
    "%2E",
    "%2f",
    "%2F",
    "%5c",
    "%25",
    "%00",
    "%0a",
    "%3a%2f%2f",
    "\uff05",  # fullwidth %
    "\uff12\uff45",  # fullwidth "2e"
    "\uff0e",  # fullwidth full stop
    "\ufe52",  # small full stop
    "\u2024",  # one dot leader
    "\u2025",  # two dot leader
    "\uff0f",  # fullwidth solidus
    "\uff3c",  # fullwidth reverse solidus
    "\u2215",  # division slash
    "://",
    "s3:",
    "file:",
    "~",
    "\x00",
    "\n",
    "\x7f",
    "\x85",
    "\u202e",
    "\ud800",
    "a",
    "team",
]

hostile_text = st.lists(
    st.one_of(st.sampled_from(HOSTILE_PIECES), st.text(max_size=3)), max_size=8
).map("".join)
any_text = st.one_of(hostile_text, st.text(), st.text(st.characters(codec="utf-8")))

safe_segment = st.text(string.ascii_letters + string.digits + "_-", min_size=1, max_size=8)

DIGEST_FIELDS = [
    "{content_hash_algorithm}",
    "{content_type}",
    "{content_encoding}",
    "{content_size}",
    "{content_size:08d}",
    "{extension}",
    "{content_hash:.2}",
    "{content_hash:.1}",
]
tag_name = st.text(string.ascii_letters + string.digits + "_-\u0660\u00b2", min_size=1, max_size=6)
tag_field = st.tuples(tag_name, st.sampled_from(["", ":.3", ":.>4", ":/<3", ":%^5", ":>2"])).map(
    lambda name_spec: f"{{tags[{name_spec[0]}]{name_spec[1]}}}"
)
literal = st.text(string.ascii_letters + string.digits + "._-%~ ", min_size=1, max_size=4)
segment = st.lists(
    st.one_of(literal, st.sampled_from(DIGEST_FIELDS), tag_field), min_size=1, max_size=3
).map("".join)


@st.composite
def templates(draw: st.DrawFn) -> str:
    """Templates that reference the whole {content_hash} plus any other fields."""
    segments = draw(st.lists(segment, max_size=3))
    where = draw(st.integers(0, len(segments)))
    around = draw(
        st.sampled_from(["{content_hash}", "{content_hash}{extension}", "x{content_hash}"])
    )
    segments.insert(where, around)
    return "/".join(segments)


def tag_names_of(template: str) -> list[str]:
    return re.findall(r"\{tags\[([^\]]+)\]", template)


@st.composite
def template_and_tags(draw: st.DrawFn) -> tuple[str, dict[str, str]]:
    template = draw(templates())
    names = tag_names_of(template)
    tags = {name: draw(st.one_of(hostile_text, safe_segment)) for name in names}
    if names and draw(st.booleans()):
        tags.pop(draw(st.sampled_from(names)))  # a tag the template needs is missing
    return template, tags


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | any_text,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(any_text, children, max_size=4)
    ),
    max_leaves=12,
)
PROTOCOLS = ["memory", "file", "s3", "s3a", "gcs", "gs", "abfs", "az", "http", "MEMORY", "memory "]
pointer_like = st.fixed_dictionaries(
    {
        "protocol": st.one_of(st.sampled_from(PROTOCOLS), any_text),
        "root": st.one_of(st.just("/lake"), st.just("bucket/lake"), hostile_text),
        "path": st.one_of(safe_segment, hostile_text),
    },
    optional={
        "content_hash": st.one_of(st.text(max_size=64), json_values),
        "content_hash_algorithm": st.one_of(
            st.sampled_from(["sha256", "md5", "nope"]), json_values
        ),
        "content_size": st.one_of(st.integers(-5, 10**6), json_values),
        "future": json_values,
    },
)


# --- properties -----------------------------------------------------------------------


@examples(5000)
@given(st.one_of(hostile_text, any_text, st.lists(safe_segment, min_size=1).map("/".join)))
@example("a/%252e%252e/b")  # percent-encoded twice
@example("\uff05\uff12\uff45\uff05\uff12\uff45")  # fullwidth "%2e%2e": NFKC, then decode
@example("a/.. /b")  # Windows trims trailing spaces and dots
@example("a/ /b")
@example("a/.../b")
def test_accepted_paths_never_escape(path: str) -> None:
    problem = path_problem(path)
    if problem is None:
        assert escapes(path) is None, f"accepted {path!r}, but {escapes(path)}"
    else:
        assert isinstance(problem, str)
        assert problem


@examples(300)
@given(st.lists(safe_segment, min_size=1, max_size=6).map("/".join))
def test_plain_paths_are_accepted(path: str) -> None:
    assert path_problem(path) is None


@examples(1500)
@given(template_and_tags(), st.sampled_from(["application/json", "text/plain", "a/../b", ""]))
def test_templates_render_safe_paths_or_refuse(
    template_tags: tuple[str, dict[str, str]], content_type: str
) -> None:
    template, tags = template_tags
    router = outcome(PathTemplate, template)
    if isinstance(router, ValueError):
        assert str(router).startswith("Invalid path template")
        return
    path = outcome(router, digest_of(b"data", content_type), tags)
    if isinstance(path, ValueError):
        assert "needs tag" in str(path) or "renders" in str(path)
        return
    assert escapes(path) is None, f"{template!r} with {tags!r} rendered {path!r}"


def outcome(function: Any, *args: Any) -> Any:
    """What ``function(*args)`` returns, or the ValueError it raises."""
    try:
        return function(*args)
    except ValueError as error:
        return error


@examples(800)
@given(st.one_of(json_values.map(json.dumps), pointer_like.map(json.dumps)))
def test_deserialize_config_over_arbitrary_json(text: str) -> None:
    check_deserialized(text)


@examples(2000)
@given(st.one_of(any_text, st.binary().map(lambda b: b.decode("latin-1"))))
@example("[" * 10_000)  # nested too deep for the JSON parser
@example('{"protocol": "s3", "root": "b", "path": "p", "content_size": "12"}')
@example('{"protocol": "s3", "root": "b", "path": "p", "content_size": true}')
@example('{"protocol": "s3", "root": "b", "path": "p", "content_hash": 5}')
def test_deserialize_config_over_arbitrary_strings(text: str) -> None:
    check_deserialized(text)


STORAGE = FsspecStorage("memory://properties")


def check_deserialized(text: str) -> None:
    pointer = outcome(STORAGE.deserialize_config, text)
    if isinstance(pointer, ValueError):
        assert str(pointer).startswith("Invalid FsspecStorage data")
        return
    assert re.fullmatch(r"[a-z][a-z0-9+.-]*", pointer["protocol"])
    assert escapes(pointer["path"]) is None
    assert pointer["root"].strip("/")
    assert ".." not in pointer["root"].split("/")
    size = pointer.get("content_size")
    assert size is None or (type(size) is int and size >= 0)
    for key in ("content_hash", "content_hash_algorithm"):
        assert isinstance(pointer.get(key) or "", str)
    assert json.loads(STORAGE.serialize_config(pointer)) == pointer


@examples(600)
@given(pointer_like)
def test_a_pointer_reads_only_what_the_configuration_allows(pointer: dict[str, Any]) -> None:
    storage = FsspecStorage("memory://allowed", verify_reads=True)
    asked: list[str] = []
    opened: list[str] = []
    backends_for = storage._backends_for
    original_filesystem = fsspec.filesystem

    def record_backend(protocol: str) -> Any:
        asked.append(protocol)
        return backends_for(protocol)

    def record_filesystem(protocol: str, **options: Any) -> Any:
        opened.append(protocol)
        return original_filesystem(protocol, **options)

    storage._backends_for = record_backend  # type: ignore[method-assign]
    fsspec.filesystem = record_filesystem
    try:
        outcome = asyncio.run(read_both_ways(storage, pointer))
    finally:
        fsspec.filesystem = original_filesystem
    assert set(asked) <= {"memory"}
    assert set(opened) <= {"memory"}
    if pointer["protocol"] != "memory":
        assert outcome == "refused", (pointer, outcome)


async def read_both_ways(storage: FsspecStorage, pointer: dict[str, Any]) -> str:
    outcomes = set()
    for how in ("blob", "stream"):
        try:
            if how == "blob":
                await storage.read_data(pointer)  # type: ignore[arg-type]
            else:
                [_ async for _ in storage.read_data_stream(pointer)]  # type: ignore[arg-type]
            outcomes.add("read")
        except ValueError as error:
            outcomes.add("refused" if str(error) else "refused without a message")
        except (NoStorageData, IsADirectoryError, NotADirectoryError, PermissionError):
            outcomes.add("missing")
    assert len(outcomes) == 1, outcomes
    return outcomes.pop()


@pytest.mark.parametrize(
    "path",
    [
        "a/%252e%252e/b",
        "%25252e%25252e",
        "\uff05\uff12\uff45\uff05\uff12\uff45",
        "a/.. /b",
        "a/ /b",
        "a/./b",
        "a/.../b",
    ],
)
def test_encoded_traversals_are_refused(path: str) -> None:
    """Findings of the properties above, kept as explicit cases."""
    assert path_problem(path) is not None
    storage = FsspecStorage("memory://x", router="{tags[t]}/{content_hash}")
    with pytest.raises(ValueError, match="'t'"):
        asyncio.run(storage.write_data(b"x", digest_of(b"x"), {"t": path}))


@pytest.mark.parametrize("name", ["00", "007", "\u0660"])
def test_tag_names_that_format_reads_as_numbers_are_refused(name: str) -> None:
    """Finding: str.format looks up {tags[00]} as tags[0], so the write failed with a
    KeyError instead of a ValueError; such templates are now refused up front."""
    with pytest.raises(ValueError, match=r"reads \{tags\[.+\]\} as \{tags\[\d+\]\}"):
        PathTemplate(f"{{content_hash}}/{{tags[{name}]}}")
    assert PathTemplate("{content_hash}/{tags[0]}")(digest_of(b"x"), {"0": "a"}).endswith("/a")
