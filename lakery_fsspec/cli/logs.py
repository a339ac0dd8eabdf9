"""The storage's log as the command line shows it: warnings in its own words on stderr,
everything with ``--debug``."""

from __future__ import annotations

import logging
import re
import sys

__all__ = ["leftover_warnings", "show_logs"]

_LOGGER = "lakery_fsspec"
_URL = re.compile(r"\w+://\S+")


class _Warnings(logging.Handler):
    """Prints the storage's warnings as ``warning: …``. A clean-up that failed (an upload's
    abort, a temp object's removal) is held back until the command ends, told once per
    temp object and naming ``lakery-fsspec gc`` rather than the Python API: see
    ``leftover_warnings``."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.held: dict[str, str] = {}

    def emit(self, record: logging.LogRecord) -> None:
        cleanup = getattr(record, "cleanup", None)
        if not isinstance(cleanup, str):
            print(f"warning: {record.getMessage()}", file=sys.stderr, flush=True)
            return
        found = _URL.search(cleanup)
        where = found.group(0) if found else cleanup
        self.held.setdefault(
            where,
            f"warning: could not make sure that nothing is left at {where} "
            f"({getattr(record, 'reason', '')}); `lakery-fsspec gc` removes whatever is "
            "there once it is older than its --older-than (1 day)",
        )


def leftover_warnings() -> list[str]:
    """The clean-up warnings held back since the last call (none under ``--debug``, whose
    log shows them as they come). The caller prints them unless the command failed in a
    way that wrote nothing (refused credentials, say): then they would only mislead."""
    held: list[str] = []
    for handler in logging.getLogger(_LOGGER).handlers:
        if isinstance(handler, _Warnings):
            held += handler.held.values()
            handler.held.clear()
    return held


def show_logs(debug: bool) -> None:
    """Send the storage's log to stderr: its warnings, or with ``debug`` everything."""
    logger = logging.getLogger(_LOGGER)
    if debug:
        logging.basicConfig(format="%(name)s %(levelname)s %(message)s")
        logger.setLevel(logging.DEBUG)
        return
    if not any(isinstance(handler, _Warnings) for handler in logger.handlers):
        logger.addHandler(_Warnings())
