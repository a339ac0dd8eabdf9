"""A third-party backend for its own protocol, registered through the public function."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest
from fsspec.implementations.memory import MemoryFileSystem
from fsspec.registry import register_implementation, registry
from fsspec.spec import AbstractFileSystem
from helpers import CHUNK, payload, read, write

from lakery_fsspec import Backend, FsspecStorage, register_backend


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

    protocols = ("logged", "logd")
    atomic_put = True
    needs_dirs = False
    moves: ClassVar[list[tuple[str, str]]] = []

    async def move(self, source: str, destination: str, digest: object) -> None:  # type: ignore[override]
        LoggedBackend.moves.append((source, destination))
        await super().move(source, destination, digest)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def logged_protocol() -> None:
    if "logged" not in registry:
        register_implementation("logged", LoggedFileSystem)
        register_implementation("logd", LoggedFileSystem)
    register_backend(LoggedBackend)


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


def test_a_backend_without_protocols_is_refused() -> None:
    class Nameless(Backend):
        pass

    with pytest.raises(ValueError, match="names no protocol"):
        register_backend(Nameless)


class AdaptedMemory(MemoryFileSystem):
    """Another implementation of an existing protocol (as obstore's adapter is of s3)."""

    protocol = "memory"


class AdaptedBackend(Backend):
    """A backend for that class under whichever protocol it is registered for."""

    filesystem = f"{__name__}.AdaptedMemory"
    atomic_put = True
    needs_dirs = False


def test_a_backend_of_a_class_serves_it_under_any_protocol(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lakery_fsspec._backends import _REGISTRY, backend_class  # pyright: ignore[reportPrivateUsage]
    from lakery_fsspec._backends.memory import MemoryBackend

    monkeypatch.setitem(_REGISTRY, "*", list(_REGISTRY.get("*", [])))
    register_backend(AdaptedBackend)
    # Registered for s3, it is not what S3's backend drives: its own backend serves it.
    assert backend_class("s3", AdaptedMemory) is AdaptedBackend
    assert backend_class("s3") is not AdaptedBackend  # what names the protocol in pointers
    # A protocol's own backend comes first where it drives the class (subclasses included).
    assert backend_class("memory", AdaptedMemory) is MemoryBackend
    assert backend_class("gcs", MemoryFileSystem) is Backend
