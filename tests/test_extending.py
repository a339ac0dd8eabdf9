"""A third-party protocol and its backend, registered through the public function."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import register_implementation, registry
from fsspec.spec import AbstractFileSystem
from helpers import CHUNK, payload, read, write

from lakery_fsspec import Backend, FsspecStorage, ProtocolSpec, register_protocol


class LoggedFileSystem(MemoryFileSystem):
    """A filesystem of "a third party": memory under its own protocol name."""

    protocol = ("logged", "logd")
    store: ClassVar[dict[str, Any]] = {}  # its own store, apart from memory://
    pseudo_dirs: ClassVar[list[str]] = [""]

    @classmethod
    def _strip_protocol(cls, path: str) -> str:
        return "/" + str(AbstractFileSystem._strip_protocol.__func__(cls, path)).lstrip("/")  # type: ignore[attr-defined]


class LoggedBackend(Backend):
    """Its backend: the generic operations, counting the moves it makes."""

    atomic_put = True
    needs_dirs = False
    moves: ClassVar[list[tuple[str, str]]] = []

    async def move(self, source: str, destination: str, digest: object) -> None:  # type: ignore[override]
        LoggedBackend.moves.append((source, destination))
        await super().move(source, destination, digest)  # type: ignore[arg-type]


class Logged(ProtocolSpec):
    """Its protocol: two names, the first recorded in pointers, served by its backend."""

    names = ("logged", "logd")
    backend = LoggedBackend


@pytest.fixture(autouse=True)
def logged_protocol() -> None:
    if "logged" not in registry:
        register_implementation("logged", LoggedFileSystem)
        register_implementation("logd", LoggedFileSystem)
    register_protocol(Logged)


@pytest.mark.parametrize("how", ["blob", "stream"])
async def test_a_registered_backend_serves_its_protocol(how: str) -> None:
    storage = FsspecStorage(f"logd://lake-{how}", chunk_size=CHUNK)
    data = payload(3 * CHUNK + 1, seed=3)
    moves = len(LoggedBackend.moves)
    pointer = await write(storage, data, how)
    assert pointer["protocol"] == "logged"  # its first name, for every spelling
    assert pointer["root"] == f"/lake-{how}"
    assert await read(storage, pointer, how) == data
    assert len(LoggedBackend.moves) == moves + (how == "stream")
    assert type(storage._backends_for("logged").target) is LoggedBackend


def test_a_spec_without_names_is_refused() -> None:
    class Nameless(ProtocolSpec):
        backend = LoggedBackend

    with pytest.raises(ValueError, match="names no protocol"):
        register_protocol(Nameless)


class AdaptedMemory(MemoryFileSystem):
    """Another implementation of an existing protocol (as obstore's adapter is of s3)."""

    protocol = "memory"


class AdaptedBackend(Backend):
    """A backend for that class under whichever protocol it is registered for."""

    atomic_put = True
    needs_dirs = False


class Adapted(ProtocolSpec):
    """Its spec: a filesystem class, no names of its own."""

    filesystem = f"{__name__}.AdaptedMemory"
    backend = AdaptedBackend


def test_a_backend_of_a_class_serves_it_under_any_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lakery_fsspec._backends import _REGISTRY, spec_for  # pyright: ignore[reportPrivateUsage]
    from lakery_fsspec._backends.memory import Memory

    monkeypatch.setitem(_REGISTRY, "*", list(_REGISTRY.get("*", [])))
    register_protocol(Adapted)
    # Registered for s3, it is not what S3's spec drives: its own spec serves it.
    assert spec_for("s3", AdaptedMemory) is Adapted
    assert spec_for("s3") is not Adapted  # what names the protocol in pointers
    # A protocol's own spec comes first where it drives the class (subclasses included).
    assert spec_for("memory", AdaptedMemory) is Memory
    assert spec_for("gcs", MemoryFileSystem) is ProtocolSpec


def test_a_protocol_is_what_fsspec_would_load_for_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from fsspec.registry import known_implementations

    from lakery_fsspec._backends import spec_for
    from lakery_fsspec._backends.sftp import SFTP
    from lakery_fsspec._backends.sshfs import SSHFS

    # Whatever else serves the name, sftp:// is paramiko's unless sshfs is registered for
    # it: the extra a user without paramiko is told to install is the right one.
    monkeypatch.delitem(registry, "sftp", raising=False)
    monkeypatch.setitem(known_implementations, "sftp", dict(known_implementations["sftp"]))
    assert spec_for("sftp") is SFTP
    assert spec_for("sftp").extra == "sftp"
    known_implementations["sftp"]["class"] = "sshfs.spec.SSHFileSystem"
    assert spec_for("sftp") is SSHFS
