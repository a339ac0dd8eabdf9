"""The options commands share, and reading their values: storage options, relocations,
durations, sizes, fractions, seconds."""

from __future__ import annotations

import argparse
import json
import re
from typing import Any

__all__ = [
    "DEFAULT_TIMEOUT",
    "KEY",
    "URL_VARIABLE",
    "add_relocated",
    "add_storage_options",
    "add_temp_prefix",
    "add_timeout",
    "add_url",
    "command",
    "key_value",
    "parse_duration",
    "parse_fraction",
    "parse_size",
    "positive_int",
    "relocation",
    "seconds",
]

URL_VARIABLE = "LAKERY_FSSPEC_URL"
DEFAULT_TIMEOUT = 60.0
"""Seconds each storage call may take, unless ``--timeout`` says otherwise."""

KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
"""A storage option's name."""
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
_SIZES = {
    "": 1,
    "b": 1,
    "k": 2**10,
    "kb": 10**3,
    "kib": 2**10,
    "m": 2**20,
    "mb": 10**6,
    "mib": 2**20,
    "g": 2**30,
    "gb": 10**9,
    "gib": 2**30,
}


def command(
    commands: Any, name: str, summary: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """A sub-command's parser, with its summary, epilog and ``--debug``."""
    parser = commands.add_parser(
        name, help=summary, description=summary[0].upper() + summary[1:], epilog=epilog
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks and debug logs")
    return parser


def add_url(parser: argparse.ArgumentParser) -> None:
    """The optional URL argument."""
    parser.add_argument(
        "url", nargs="?", metavar="URL", help=f"storage URL (default ${URL_VARIABLE} or ./lake)"
    )


def add_storage_options(parser: argparse.ArgumentParser, *flags: str, note: str = "") -> None:
    """``-o KEY=VALUE`` (under ``flags``), repeatable."""
    parser.add_argument(
        *flags,
        "--storage-option",
        dest="storage_option",
        action="append",
        default=[],
        type=key_value,
        metavar="KEY=VALUE",
        help="an fsspec storage option, e.g. endpoint_url=http://127.0.0.1:5000 or anon=true; "
        f"VALUE is read as JSON when it parses (repeatable){note}",
    )


def add_relocated(parser: argparse.ArgumentParser) -> None:
    """``--relocated OLD=NEW``, repeatable."""
    parser.add_argument(
        "--relocated",
        action="append",
        default=[],
        type=relocation,
        metavar="OLD=NEW",
        help="read pointers recorded under the root OLD (or inside it) from NEW instead, "
        "same relative path, e.g. --relocated ./old-lake=s3://bucket/lake (repeatable)",
    )


def relocation(text: str) -> tuple[str, str]:
    """``--relocated``'s value: ``OLD=NEW`` -> ``(OLD, NEW)``."""
    old, sep, new = text.partition("=")
    if not sep or not old.strip() or not new.strip():
        msg = f"expected OLD=NEW (two storage URLs or local paths), got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return old, new


def add_timeout(parser: argparse.ArgumentParser) -> None:
    """``--timeout SECONDS``: each storage call's limit."""
    parser.add_argument(
        "--timeout",
        type=seconds,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"the most each call to the storage may take: one request or upload block, "
        f"not the whole command (default {DEFAULT_TIMEOUT:g}; 0 waits as long as the "
        "client does)",
    )


def seconds(text: str) -> float | None:
    """``--timeout``'s value: seconds, or None for 0 (the client's own limits)."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        msg = f"not a number of seconds: {text!r} (write e.g. 60, or 0 for no limit)"
        raise argparse.ArgumentTypeError(msg)
    return value or None


def add_temp_prefix(parser: argparse.ArgumentParser) -> None:
    """``--temp-prefix FOLDER``."""
    parser.add_argument(
        "--temp-prefix",
        default=".lakery-tmp",
        metavar="FOLDER",
        help="the storage's temp folder under its root (default .lakery-tmp)",
    )


def key_value(text: str) -> tuple[str, Any]:
    """``key=value`` -> ``(key, value)``, the value parsed as JSON when it parses."""
    key, sep, value = text.partition("=")
    if not sep or not KEY.fullmatch(key):
        msg = f"expected KEY=VALUE, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


def parse_duration(text: str) -> float:
    """``"90"``, ``"90s"``, ``"30m"``, ``"12h"``, ``"7d"``, ``"2w"``, ``"1h30m"`` -> seconds."""
    cleaned = text.strip().lower().replace(" ", "")
    try:
        seconds = float(cleaned)
    except ValueError:
        pass
    else:
        if seconds >= 0:
            return seconds
    parts = re.findall(r"(\d+(?:\.\d+)?)([smhdw])", cleaned)
    if not parts or "".join(number + unit for number, unit in parts) != cleaned:
        msg = f"not a duration: {text!r} (write e.g. 90s, 30m, 12h, 7d or 1h30m)"
        raise argparse.ArgumentTypeError(msg)
    return sum(float(number) * _UNITS[unit] for number, unit in parts)


def parse_fraction(text: str) -> float:
    """``"0.01"``, ``"1%"`` -> a fraction in (0, 1]."""
    cleaned = text.strip()
    try:
        value = float(cleaned.removesuffix("%")) / (100 if cleaned.endswith("%") else 1)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        msg = f"not a fraction: {text!r} (write e.g. 0.01 or 1% for one object in a hundred)"
        raise argparse.ArgumentTypeError(msg)
    return value


def positive_int(text: str) -> int:
    """``"8"`` -> 8; a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        msg = f"not a positive whole number: {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return value


def parse_size(text: str) -> int:
    """``"12MiB"``, ``"512k"``, ``"1000"`` -> bytes (K/M/G are powers of 1024)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in _SIZES:
        msg = f"not a size: {text!r} (write e.g. 4096, 512KiB or 12MiB)"
        raise argparse.ArgumentTypeError(msg)
    return int(float(match.group(1)) * _SIZES[unit])
