"""The command-line side: the ``lakery-fsspec`` command, its checks, diagnoses and demo.

Tooling over the library; nothing in the core imports it.
"""

from lakery_fsspec.cli.commands import DEFAULT_URL, URL_VARIABLE, main, parse_duration, parse_size

__all__ = ["DEFAULT_URL", "URL_VARIABLE", "main", "parse_duration", "parse_size"]
