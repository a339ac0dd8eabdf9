"""The contenders: each a `Family` of `Contender`s, keyed by a short name."""

from __future__ import annotations

from benchmarks.contenders.base import Contender, Family
from benchmarks.contenders.fsspec_storage import FsspecStorageFamily, PlainLocalFamily
from benchmarks.contenders.natives import NativeFamily
from benchmarks.contenders.obstore_api import ObstoreFamily
from benchmarks.contenders.obstore_fsspec import ObstoreFsspecFamily
from benchmarks.contenders.physical import PhysicalFamily
from benchmarks.contenders.raw_fsspec import RawFsspecFamily

__all__ = ["FAMILIES", "Contender", "Family"]

FAMILIES: dict[str, type[Family]] = {
    family.key: family
    for family in (
        FsspecStorageFamily,
        PlainLocalFamily,
        RawFsspecFamily,
        NativeFamily,
        ObstoreFamily,
        ObstoreFsspecFamily,
        PhysicalFamily,
    )
}
