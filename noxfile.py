"""Sessions: `nox` runs the tests on every backend and the lint; see README.

Every session installs from `locks/test.txt`, the whole test environment pinned (transitive
packages included), so a run next month resolves what this one did. `nox -s lock` upgrades
the pins to the newest releases; `nox -s latest` runs the suite on the newest releases
without touching them, to catch a drift on purpose rather than by surprise.
"""

from __future__ import annotations

import os
from pathlib import Path

import nox

LOCK = "locks/test.txt"
AZURITE = "locks/azurite"
"""package.json and package-lock.json: Azurite as the tests install it (`npm ci`)."""
EXTRAS = ("test", "engines", "bench", "dev", "sshfs", "obstore")
"""Every extra a session installs: one lock covers them all."""

BACKENDS = ("memory", "local", "s3", "gcs", "azure")
"""Run together by `tests(backend='all')`."""
SERVERS = ("seaweedfs", "sftp", "sshfs", "ftp", "webdav")
"""A session each: seaweedfs (a real S3 server; the S3 tests that run on moto in 'all'),
sftp (fsspec's paramiko client) and sshfs, which both claim sftp://."""

nox.options.sessions = [
    "tests(backend='all')",
    *(f"tests(backend='{name}')" for name in SERVERS),
    "engines",
    "lint",
    "bench-quick",
]
nox.options.reuse_existing_virtualenvs = True
# uv makes each session's environment from its cache in seconds (pip took a minute or more).
nox.options.default_venv_backend = "uv|virtualenv"


def _install(session: nox.Session, extras: str, *, locked: bool = True) -> None:
    pins = ["-c", LOCK] if locked else []
    session.install(*pins, "-e", f".[{extras}]")


@nox.session(python="3.11")
@nox.parametrize("backend", ["all", *BACKENDS, *SERVERS])
def tests(session: nox.Session, backend: str) -> None:
    """The test suite on one backend ('all': memory, local and the clouds); servers and
    emulators start themselves."""
    _install(session, "test,sshfs" if backend == "sshfs" else "test")
    backends = ",".join(BACKENDS) if backend == "all" else backend
    session.run("pytest", f"--backends={backends}", *session.posargs)


@nox.session(python="3.11")
def engines(session: nox.Session) -> None:
    """Dask and Ray worker processes writing through one storage, on local files and every
    cloud emulator (tests/engines, left out of the `tests` sessions)."""
    _install(session, "engines")
    session.run("pytest", "tests/engines", "--backends=local,s3,gcs,azure", *session.posargs)


@nox.session(name="gc-soak", python="3.11")
def gc_soak(session: nox.Session) -> None:
    """gc's race harness (tests/test_gc_race.py) for $LAKERY_GC_SOAK_SECONDS (default 300)
    per backend, on local files and every server gc is proven on; not a default session."""
    _install(session, "test")
    seconds = os.environ.get("LAKERY_GC_SOAK_SECONDS", "300")
    backends = "--backends=local,s3,gcs,azure,seaweedfs,sftp"
    session.run(
        "pytest",
        "tests/test_gc_race.py",
        backends,
        "-s",
        *session.posargs,
        env={"LAKERY_GC_SOAK_SECONDS": seconds},
    )


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff (lint and format) and pyright (strict on the package)."""
    _install(session, "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("pyright")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """Side-by-side benchmarks on every backend (`nox -s bench -- --quick` for a short run)."""
    _install(session, "bench")
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session(name="bench-quick", python="3.11")
def bench_quick(session: nox.Session) -> None:
    """The benchmarks' quick mode, to prove the harness works (CI; no timing is asserted)."""
    _install(session, "bench")
    session.run("python", "-m", "benchmarks", "--quick")


def _compile(session: nox.Session, output: str, *, upgrade: bool) -> None:
    """Pin the whole test environment into `output` (newest releases when `upgrade`)."""
    session.install("-c", LOCK, "uv")
    extras = [arg for name in EXTRAS for arg in ("--extra", name)]
    session.run(
        *("uv", "pip", "compile", "pyproject.toml", *extras, "--universal"),
        *("--python-version", "3.11", "--no-header", "-o", output),
        *(["--upgrade"] if upgrade else []),
    )


@nox.session(python="3.11")
def lock(session: nox.Session) -> None:
    """Upgrade every pin in `locks/test.txt` to the newest releases (then run `nox` and
    commit). `nox -s lock -- --keep` only adds what pyproject.toml newly asks for."""
    upgrade = "--keep" not in session.posargs
    _compile(session, LOCK, upgrade=upgrade)
    _lock_azurite(session, AZURITE, upgrade=upgrade)


def _lock_azurite(session: nox.Session, folder: str, *, upgrade: bool) -> None:
    """Pin Azurite and its npm dependencies in `folder`/package-lock.json."""
    newest = ["azurite@latest", "--save-exact"] if upgrade else []
    npm = ("npm", "install", "--package-lock-only", "--no-audit", "--no-fund")
    session.run(*npm, *newest, "--prefix", folder, external=True)


@nox.session(python="3.11")
def latest(session: nox.Session) -> None:
    """The whole suite on the newest releases, the pins left as they are: how a drift is
    found on purpose (by hand; not in the default run). Any posargs go to pytest."""
    tmp = Path(session.create_tmp())
    newest = tmp / "newest.txt"
    _compile(session, str(newest), upgrade=True)
    azurite = tmp / "azurite"
    azurite.mkdir(exist_ok=True)
    (azurite / "package.json").write_text('{"private": true, "dependencies": {}}')
    _lock_azurite(session, str(azurite), upgrade=True)
    session.env["LAKERY_AZURITE_LOCK"] = str(azurite)
    session.install("-c", str(newest), "-e", ".[test,engines]")
    session.run("pytest", f"--backends={','.join(BACKENDS)}", *session.posargs)
    for server in ("seaweedfs", "sftp", "ftp", "webdav"):  # sshfs would take sftp:// from paramiko
        session.run("pytest", f"--backends={server}", *session.posargs)
    session.run("pytest", "tests/engines", "--backends=local,s3,gcs,azure", *session.posargs)
