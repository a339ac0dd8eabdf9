"""The command line's own failures: a mistake in the command (exit 2), or a refusal that
needs no diagnosis of a storage error (exit 1)."""

from __future__ import annotations

__all__ = ["Failure", "UsageError"]


class UsageError(Exception):
    """A command line that cannot be carried out as given (exit status 2)."""


class Failure(Exception):
    """What went wrong and how to fix it, in plain words (exit status 1, no traceback)."""

    def __init__(self, message: str, fix: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.fix = fix
