"""Turning storage errors into plain words: what went wrong and how to fix it.

The exceptions come from fsspec and the cloud SDKs under it (s3fs/botocore, gcsfs, adlfs/
azure-core, aiohttp). They are recognised by error codes and class names found anywhere in
the exception's chain, so no SDK needs to be installed for this module to work.
"""

from __future__ import annotations

import re
import socket
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from lakery_fsspec._backends import Diagnosis, Diagnostics
from lakery_fsspec._errors import exception_chain
from lakery_fsspec._location import spec_of
from lakery_fsspec._pointer import FsspecPointer

__all__ = [
    "Diagnosis",
    "EndpointUnreachable",
    "diagnose",
    "diagnostics_of",
    "endpoint_of",
    "pointer_mixed_up",
    "probe_endpoint",
]

_NO_CREDENTIAL_CLASSES = {
    "NoCredentialsError",
    "PartialCredentialsError",
    "DefaultCredentialsError",
    "CredentialUnavailableError",
}
_CONNECT_CLASSES = {
    "EndpointUnreachable",
    "EndpointConnectionError",
    "ClientConnectorError",
    "ServiceRequestError",
    "ProxyConnectionError",
    "ConnectionRefusedError",
}
_TIMEOUT_CLASSES = {"ConnectTimeoutError", "ReadTimeoutError", "ServerTimeoutError", "TimeoutError"}


_NOUNS = {"write": "write", "list": "listing"}


class EndpointUnreachable(ConnectionError):
    """Nothing answered at the storage's endpoint (raised by ``probe_endpoint``)."""


def diagnose(
    error: BaseException,
    *,
    url: str,
    protocol: str = "",
    action: str = "",
    endpoint: str | None = None,
) -> Diagnosis:
    """Explain ``error``, raised while doing ``action`` (list/write/read/delete/move) at ``url``.

    ``protocol`` is the storage's canonical fsspec protocol, ``endpoint`` the server it
    talks to if one was configured; both only sharpen the words.
    """
    chain = list(exception_chain(error))
    names = {cls.__name__ for item in chain for cls in type(item).__mro__}
    codes = [code for item in chain if (code := _code(item))]
    words = diagnostics_of(protocol)
    meanings = {words.codes[code] for code in codes if code in words.codes}
    operation = next((op for item in chain if (op := getattr(item, "operation_name", None))), "")
    if isinstance(operation, str):  # botocore names the operation that failed
        action = words.operations.get(operation, action)
    endpoint = endpoint or _endpoint_in(chain)
    where = f" at {endpoint}" if endpoint else ""
    kind_of_root = words.root_kind
    bucket = _bucket(url)
    text = _first_line(error)

    if known := _argument_problem(error, names, text):
        return known
    if own := words.explain(error, chain):
        return own
    if "no-bucket" in meanings:
        return _no_bucket(kind_of_root, bucket, where)
    # Listing raises FileNotFoundError only for a missing bucket (list_temp checks).
    missing = action in ("write", "list") and isinstance(error, FileNotFoundError)
    if kind_of_root != "root" and missing:
        if words.bare_refusals:  # a missing bucket has a code; a bare 404 may not be one
            return Diagnosis(
                "no-bucket",
                f"The server{where} answered 'Not Found' to a {_NOUNS[action]}: the {kind_of_root} "
                f"{bucket!r} does not exist, or this endpoint is not a {protocol}:// service.",
                f"Check the endpoint URL and the {kind_of_root} name.",
            )
        return _no_bucket(kind_of_root, bucket, where)
    if names & _NO_CREDENTIAL_CLASSES:
        return Diagnosis(
            "no-credentials",
            f"No credentials were found for {protocol or 'this storage'} ({text}).",
            words.credentials_hint,
        )
    if bad := _bad_credentials(words, meanings, codes, chain, where):
        return bad
    if "denied" in meanings or _forbidden(chain) or isinstance(error, PermissionError):
        return _denied(words, error, codes, action, protocol, url)
    if names & _CONNECT_CLASSES or any(isinstance(item, socket.gaierror) for item in chain):
        return _unreachable(chain, endpoint, protocol)
    if names & _TIMEOUT_CLASSES:
        return Diagnosis(
            "timeout",
            f"The storage{where} did not answer in time ({text or 'timed out'}).",
            "Check the network, proxy and endpoint, and that the server is not overloaded.",
        )
    if isinstance(error, OSError) and error.errno is not None and protocol in ("file", ""):
        name = f" {error.filename}" if error.filename else ""
        return Diagnosis(
            "local-error",
            f"Local file error on{name}: {error.strerror}.",
            "Check that the path is a directory you can write to.",
        )
    return Diagnosis(
        "unexpected",
        f"{type(error).__name__}: {text}" if text else type(error).__name__,
        "Re-run with --debug to see the full traceback.",
    )


def diagnostics_of(protocol: str) -> type[Diagnostics]:
    """The command line's words for ``protocol`` (the generic ones if it is unknown)."""
    return spec_of(protocol).diagnostics if protocol else Diagnostics


def endpoint_of(protocol: str, options: Mapping[str, Any]) -> str | None:
    """The server URL a storage was explicitly pointed at (options or environment), if any."""
    return spec_of(protocol).endpoint(options) if protocol else None


def pointer_mixed_up(pointer: FsspecPointer) -> str:
    """Why a pointer cannot be right, if its path holds another hash than it records
    (a pointer edited, or pieced together from two): else ``""``."""
    recorded = pointer.get("content_hash")
    hashes = re.findall(r"[0-9a-f]{32,}", pointer["path"])
    if not recorded or not hashes or recorded in hashes:
        return ""
    return (
        f"The pointer itself is wrong: its path names the content {hashes[-1][:12]}…, but "
        f"it records the hash {recorded[:12]}… (it was edited, or pieced together from "
        "two pointers); the stored object may well be intact."
    )


# --- the kinds --------------------------------------------------------------------------


def _argument_problem(error: BaseException, names: set[str], text: str) -> Diagnosis | None:
    if "ReadOnlyStorageError" in names:
        return Diagnosis("read-only", text, "Give the storage a path template to write.")
    if "NoStorageData" in names:
        fix = (
            "Check the pointer; the object may have been deleted. If the lake was moved, "
            "read it where it is now: --url NEW_URL, or --relocated OLD_URL=NEW_URL."
        )
        return Diagnosis("no-data", text, fix)
    if "IntegrityError" in names:
        return Diagnosis(
            "corrupt",
            text,
            "The stored object was changed or damaged since it was written. Delete it and "
            "put the original again (`lakery-fsspec verify` finds any others).",
        )
    if type(error) is not ValueError:
        return None
    if text.startswith("Unknown fsspec protocol"):
        return Diagnosis(
            "unknown-protocol", text, "Check the URL's scheme (s3://, gs://, abfs://, …)."
        )
    if "needs a package that is not installed" in text:
        return Diagnosis("missing-package", text, _install_fix(text))
    return Diagnosis("bad-argument", text, "Correct the URL, options or pointer given.")


def _no_bucket(kind: str, bucket: str, where: str) -> Diagnosis:
    if kind == "root":
        return Diagnosis("no-bucket", f"The storage root does not exist{where}.", "")
    return Diagnosis(
        "no-bucket",
        f"The {kind} {bucket!r} does not exist{where}.",
        f"Create the {kind} first (lakery-fsspec never creates {kind}s), or correct its "
        "name in the URL.",
    )


def _bad_credentials(
    words: type[Diagnostics],
    meanings: set[str],
    codes: list[str],
    chain: list[BaseException],
    where: str,
) -> Diagnosis | None:
    fix = words.credentials_hint
    if "bad-key" in meanings:
        message = f"The access key id is not known to the server{where} ({_pick(codes)})."
        return Diagnosis("bad-credentials", message, fix)
    if "bad-secret" in meanings:
        message = (
            f"The secret key is wrong: the server{where} rejected the request signature "
            f"({_pick(codes)})."
        )
        return Diagnosis("bad-credentials", message, fix)
    if "expired" in meanings:
        message = f"The credentials have expired or the session token is invalid ({_pick(codes)})."
        return Diagnosis("bad-credentials", message, fix)
    if "unauthorized" in meanings:  # a bad key, or a request not allowed at all
        message = (
            f"The server{where} refused to authorize the request ({_pick(codes)}): "
            "the account key or SAS token is wrong, or lacks permission."
        )
        return Diagnosis("bad-credentials", message, fix)
    if any(_status(item) == 401 for item in chain):
        return Diagnosis("bad-credentials", f"The server{where} rejected the credentials.", fix)
    return None


def _denied(
    words: type[Diagnostics],
    error: BaseException,
    codes: list[str],
    action: str,
    protocol: str,
    url: str,
) -> Diagnosis:
    verb = action or "access"
    if protocol in ("file", "") and isinstance(error, PermissionError):
        target = error.filename or url
        return Diagnosis(
            "permission-denied",
            f"Permission denied to {verb} {target} ({error.strerror or error}).",
            "Choose a directory you can write to, or fix its permissions.",
        )
    code = _pick(codes)
    if words.bare_refusals and not code:
        # No error code: the key, the secret or the policy may be wrong.
        return Diagnosis(
            "permission-denied",
            f"Access denied (403 Forbidden) trying to {verb} in {url}: the credentials are "
            "wrong or lack permission.",
            "Run `lakery-fsspec check` on this URL to tell which; " + words.credentials_hint,
        )
    needed = words.permissions.get(action)
    grant = f" ({needed})" if needed else ""
    why = f" ({code})" if code else ""
    return Diagnosis(
        "permission-denied",
        f"Permission denied to {verb} objects in {url}{why}.",
        f"Grant these credentials permission to {verb}{grant} under the storage root.",
    )


def _unreachable(chain: list[BaseException], endpoint: str | None, protocol: str) -> Diagnosis:
    target = endpoint or f"the {protocol or 'storage'} service"
    fix = "Check the endpoint URL and that the server is running"
    option = diagnostics_of(protocol).endpoint_option
    fix += f" (-o {option}=http://HOST:PORT)." if option else "."
    if any(isinstance(item, socket.gaierror) or "DNS" in type(item).__name__ for item in chain):
        message = f"Cannot connect to {target}: its host name does not resolve (DNS lookup failed)."
        return Diagnosis("unreachable", message, "Check the spelling of the host name. " + fix)
    if any(isinstance(item, ConnectionRefusedError) for item in chain):
        message = f"Cannot connect to {target}: connection refused (nothing is listening there)."
        return Diagnosis("unreachable", message, fix)
    return Diagnosis("unreachable", f"Cannot connect to {target}: {_first_line(chain[0])}.", fix)


def probe_endpoint(endpoint: str, timeout: float) -> str:
    """Open (and close) a TCP connection to ``endpoint``; return ``host:port``.

    Raises EndpointUnreachable (from the socket error) when nothing answers in time, the
    connection is refused or the host does not resolve.
    """
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or ""
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except TimeoutError as error:
        msg = f"no answer from {host}:{port} within {timeout:g} s"
        raise EndpointUnreachable(msg) from error
    except OSError as error:
        raise EndpointUnreachable(f"{host}:{port}: {error}") from error
    return f"{host}:{port}"


# --- helpers ----------------------------------------------------------------------------


def _code(error: BaseException) -> str | None:
    """The service's error code: botocore's ``response``, azure-core's ``error_code``."""
    response = getattr(error, "response", None)
    if isinstance(response, dict):
        code = response.get("Error", {}).get("Code")
        if isinstance(code, str) and code and not code.isdigit():
            return code
    code = getattr(error, "error_code", None)
    if isinstance(code, str) and code:
        return code
    match = re.search(r"ErrorCode:(\w+)", str(error))
    return match.group(1) if match else None


def _status(error: BaseException) -> int | None:
    for name in ("status_code", "status", "code"):
        value = getattr(error, name, None)
        if isinstance(value, int) and 100 <= value < 600:
            return value
    return None


def _forbidden(chain: list[BaseException]) -> bool:
    return any(_status(item) == 403 for item in chain)


def _endpoint_in(chain: list[BaseException]) -> str | None:
    for item in chain:
        kwargs = getattr(item, "kwargs", None)
        if isinstance(kwargs, dict) and isinstance(kwargs.get("endpoint_url"), str):
            parts = urlsplit(kwargs["endpoint_url"])
            return f"{parts.scheme}://{parts.netloc}"
        host, port = getattr(item, "host", None), getattr(item, "port", None)
        if isinstance(host, str) and isinstance(port, int):
            return f"{host}:{port}"
    return None


def _pick(codes: list[str]) -> str:
    return codes[0] if codes else ""


def _bucket(url: str) -> str:
    inner = url.split("::")[-1]
    return inner.split("://", 1)[-1].strip("/").split("/", 1)[0]


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


def _install_fix(text: str) -> str:
    match = re.search(r"pip install '[^']+'", text)
    return f"Run: {match.group(0)}" if match else "Install the package that provides it."
