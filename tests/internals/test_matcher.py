"""PathMatcher: every path a template renders gives back its hash (and size, algorithm);
paths the template cannot make give nothing."""

from __future__ import annotations

import hashlib
import string
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lakery_fsspec import DEFAULT_TEMPLATE, PathTemplate
from lakery_fsspec._matcher import Expected, PathMatcher
from lakery_fsspec._paths import path_problem

TEMPLATES = [
    DEFAULT_TEMPLATE,
    "{content_hash}",
    "{content_hash:.2}/{content_hash:.4}/{content_hash}{extension}",
    "{tags[team]}/{content_hash:.2}/{content_hash}-{content_size}{extension}",
    "{tags[team]}/{tags[project]}/{content_hash}{extension}",
    "{content_type}/{content_hash_algorithm}/{content_hash}.{content_size}",
    "{content_encoding}x/{content_hash}{extension}{content_encoding}",
    "v1/{{raw}}/{content_hash:.3s}{content_hash}_{tags[team]}_{tags[team]}",
    "{content_hash_algorithm}-{content_hash}",
]
CONTENT_TYPES = ["application/json", "application/octet-stream", "text/plain", "image/png", "x/y"]
ALGORITHMS = ["sha256", "md5", "sha512", "blake2b", "sha3_256"]
tag_text = st.text(string.ascii_letters + string.digits + "-_.é/ ", min_size=1, max_size=12)


def digest(data: bytes, algorithm: str, content_type: str, encoding: str | None) -> Any:
    return {
        "content_hash": hashlib.new(algorithm, data).hexdigest(),
        "content_hash_algorithm": algorithm,
        "content_type": content_type,
        "content_encoding": encoding,
        "content_size": len(data),
    }


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    template=st.sampled_from(TEMPLATES),
    data=st.binary(max_size=64),
    algorithm=st.sampled_from(ALGORITHMS),
    content_type=st.sampled_from(CONTENT_TYPES),
    encoding=st.sampled_from([None, "gzip", "br"]),
    team=tag_text,
    project=tag_text,
)
def test_rendered_paths_give_back_their_hash(
    template: str,
    data: bytes,
    algorithm: str,
    content_type: str,
    encoding: str | None,
    team: str,
    project: str,
) -> None:
    router = PathTemplate(template)
    names_algorithm = "{content_hash_algorithm}" in template
    if not names_algorithm and algorithm != "sha256":
        algorithm = "sha256"  # without it in the path, sha256 is assumed
    made = digest(data, algorithm, content_type, encoding)
    try:
        path = router(made, {"team": team, "project": project})
    except ValueError:
        return  # a tag that makes an unsafe path is refused when writing: never stored
    assert path_problem(path) is None
    expected = PathMatcher(router).match(path)
    assert expected is not None, path
    assert expected.content_hash == made["content_hash"]
    assert expected.size == (len(data) if "{content_size}" in template else None)
    assert expected.algorithm == (algorithm if names_algorithm else None)


@pytest.mark.parametrize(
    "path",
    [
        "ab/" + "ab" * 32 + ".json",  # right hash, right prefix
        "cd/" + "ab" * 32 + ".json",  # the prefix is not the hash's
        "ab/" + "ab" * 31 + ".json",  # too short for a sha256
        "ab/" + "ab" * 33 + ".json",  # too long
        "ab/" + "ab" * 31 + "zz.json",  # not hex
        "ab/" + "ab" * 32 + "/x.json",  # one folder too many
        "notes.txt",
        "ab",
    ],
)
def test_other_paths_do_not_match(path: str) -> None:
    matched = PathMatcher(PathTemplate(DEFAULT_TEMPLATE)).match(path)
    assert (matched is not None) == (path == "ab/" + "ab" * 32 + ".json")
    if matched is not None:
        assert matched == Expected("ab" * 32, None, None)


def test_repeated_fields_must_agree() -> None:
    matcher = PathMatcher(PathTemplate("{tags[t]}/{content_size}/{content_hash}-{content_size}"))
    hex_hash = "0f" * 32
    assert matcher.match(f"a/b/12/{hex_hash}-12") == Expected(hex_hash, None, 12)
    assert matcher.match(f"a/b/12/{hex_hash}-13") is None
    same_tag = PathMatcher(PathTemplate("{tags[t]}/{content_hash}/{tags[t]}"))
    assert same_tag.match(f"x/{hex_hash}/x") is not None
    assert same_tag.match(f"x/{hex_hash}/y") is None


def test_a_default_algorithm_sets_the_hash_length() -> None:
    md5 = hashlib.md5(b"x").hexdigest()
    assert PathMatcher(PathTemplate("{content_hash}"), "md5").match(md5) == Expected(
        md5, None, None
    )
    assert PathMatcher(PathTemplate("{content_hash}")).match(md5) is None  # sha256: 64 hex


@pytest.mark.parametrize(
    "template", ["{content_hash!s}", "{content_hash:>70}", "{content_hash:.64}/{content_hash:.65}"]
)
def test_a_template_without_a_plain_hash_cannot_be_read_back(template: str) -> None:
    with pytest.raises(ValueError, match=r"no plain \{content_hash\}.*Pass pointers"):
        PathMatcher(PathTemplate(template))
