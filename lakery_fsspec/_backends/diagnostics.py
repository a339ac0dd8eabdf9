"""What the command line says about one protocol's errors: the generic words, which each
protocol's diagnostics refine. Only ``lakery_fsspec.cli`` uses these; the data path never
needs them."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

__all__ = ["Diagnosis", "Diagnostics"]


@dataclass(frozen=True)
class Diagnosis:
    """What went wrong, in plain words, and what to do about it.

    ``kind`` is a stable keyword for scripts and tests: ``unknown-protocol``,
    ``missing-package``, ``bad-argument``, ``read-only``, ``no-data``, ``corrupt``,
    ``no-bucket``, ``no-credentials``, ``bad-credentials``, ``unknown-host-key``,
    ``permission-denied``, ``unreachable``, ``timeout``, ``local-error``, ``unexpected``,
    or ``refused`` (the command line's own refusals).
    """

    kind: str
    message: str
    fix: str = ""

    def __str__(self) -> str:
        return self.message if not self.fix else f"{self.message}\nfix: {self.fix}"


class Diagnostics:
    """A protocol's words for the command line: what its root is called, how its server
    and credentials are given, its service's error codes, and plain words for errors only
    its client raises. The defaults hold for any protocol."""

    root_kind: ClassVar[str] = "root"
    """What the first segment of a root names ("bucket", "container"), or "root"."""
    endpoint_option: ClassVar[str | None] = None
    """The storage option that points the filesystem at another server, if there is one."""
    credentials_hint: ClassVar[str] = "Check the credentials in the storage options."
    """How to give this protocol credentials."""
    codes: ClassVar[Mapping[str, str]] = {}
    """The service's error codes -> what they mean: ``no-bucket``, ``bad-key`` (an
    unknown key id), ``bad-secret`` (a wrong signature or key), ``expired``,
    ``unauthorized`` (a bad key, or a request not allowed at all) or ``denied``."""
    operations: ClassVar[Mapping[str, str]] = {}
    """Operation names the client puts in its errors (botocore's ``operation_name``) ->
    what the user was doing: write, move, delete, read or list."""
    permissions: ClassVar[Mapping[str, str]] = {}
    """What the user was doing -> the permissions that allow it."""
    bare_refusals: ClassVar[bool] = False
    """Whether the server may refuse with a bare HTTP status, no error code (S3 answers
    HEAD requests so): a 404 may come from a server of another kind, and a 403 from wrong
    credentials as well as from a missing permission."""

    @classmethod
    def fail_fast(cls, options: dict[str, Any], timeout: float) -> dict[str, Any]:
        """``options`` with the client's own retries and timeouts cut short, for a check
        that should fail within ``timeout`` seconds instead of retrying for minutes."""
        return options

    @classmethod
    def explain(cls, error: BaseException, chain: list[BaseException]) -> Diagnosis | None:
        """Plain words for an error only this protocol's client raises (an unknown SSH
        host key, an FTP reply code), or None to leave it to the generic diagnosis.
        ``chain`` is the error with its causes and contexts."""
        return None
