"""Sessions: `nox` runs the tests on every backend and the lint; see README."""

from __future__ import annotations

import nox

BACKENDS = ("memory", "local", "s3", "gcs", "azure")
"""Run together by `tests(backend='all')`."""
SERVERS = ("sftp", "sshfs", "ftp", "webdav")
"""A session each: sftp (fsspec's paramiko client) and sshfs both claim sftp://."""

nox.options.sessions = [
    "tests(backend='all')",
    *(f"tests(backend='{name}')" for name in SERVERS),
    "engines",
    "lint",
    "bench-quick",
]
nox.options.reuse_existing_virtualenvs = True


@nox.session(python="3.11")
@nox.parametrize("backend", ["all", *BACKENDS, *SERVERS])
def tests(session: nox.Session, backend: str) -> None:
    """The test suite on one backend ('all': memory, local and the clouds); servers and
    emulators start themselves."""
    session.install("-e", ".[test,sshfs]" if backend == "sshfs" else ".[test]")
    backends = ",".join(BACKENDS) if backend == "all" else backend
    session.run("pytest", f"--backends={backends}", *session.posargs)


@nox.session(python="3.11")
def engines(session: nox.Session) -> None:
    """Dask and Ray worker processes writing through one storage, on local files and every
    cloud emulator (tests/engines, left out of the `tests` sessions)."""
    session.install("-e", ".[engines]")
    session.run("pytest", "tests/engines", "--backends=local,s3,gcs,azure", *session.posargs)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and pyright (strict on the package)."""
    session.install("-e", ".[dev]")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("pyright")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks on every backend (`nox -s bench -- --quick` for a short run)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(name="bench-quick", python="3.11")
def bench_quick(session: nox.Session) -> None:
    """The benchmarks' quick mode, to prove the harness works (CI; no timing is asserted)."""
    session.install("-e", ".[bench]")
    session.run("python", "-m", "benchmarks", "--quick")
