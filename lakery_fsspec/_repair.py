"""Repairing from a copy: an object ``verify`` finds corrupt, truncated or missing is
replaced with the object at the same relative path in another storage, once that one
hashes right.

The copy is read through and hashed first, so nothing is removed for a copy that is no
better; then the damaged object is removed and the copy written in its place by the
storage's write path, hashed again on the way (as ``copy`` writes)."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from lakery_fsspec._copy import send
from lakery_fsspec._matcher import Expected
from lakery_fsspec._verify import Problem, _Object, _Outcome, _Run  # pyright: ignore[reportPrivateUsage]

if TYPE_CHECKING:
    from lakery_fsspec._backends import Backend
    from lakery_fsspec._storage import FsspecStorage

__all__ = ["RepairRun"]

_REPAIRABLE = ("corrupt", "truncated", "missing")


class RepairRun(_Run):
    """Checks objects, and replaces the damaged ones from ``source``."""

    def __init__(
        self,
        storage: FsspecStorage,
        target: Backend,
        source: Backend,
        source_root: str,
        **options: object,
    ) -> None:
        super().__init__(**options)  # pyright: ignore[reportArgumentType]
        self._storage = storage
        self._target = target
        self._root = storage.location.root.rstrip("/")
        self._source = source
        self._source_root = source_root.rstrip("/")

    async def _check(self, item: _Object) -> _Outcome:
        outcome = await super()._check(item)
        problem = outcome.problem
        if problem is None or problem.kind not in _REPAIRABLE or not item.path:
            return outcome
        if item.backend is not self._target or item.location != f"{self._root}/{item.path}":
            why = "it is not under this storage's root (relocated), so it is not replaced"
            return replace(outcome, problem=_not_repaired(problem, why))
        expected = item.expected or Expected("", None, None)
        if not expected.content_hash:
            why = "no hash is recorded to check a copy against"
            return replace(outcome, problem=_not_repaired(problem, why))
        copy = _Object(
            url=f"{self._source.protocol}://{self._source_root}/{item.path}",
            path=item.path,
            backend=self._source,
            location=f"{self._source_root}/{item.path}",
            expected=expected,
            source=item.source,
        )
        size = await self._source.size(copy.location)
        checked = await super()._check(copy) if size is not None else None
        if checked is None or checked.problem is not None or not checked.hashed:
            why = f"the copy at {copy.url} is no better: " + (
                "there is none" if checked is None else str(checked.problem or "no hash")
            )
            return replace(outcome, problem=_not_repaired(problem, why))
        assert size is not None
        await self._target.remove(item.location)
        sent = await send(self, self._storage, self._target, item.location, copy, expected, size)
        total = outcome.size + checked.size + sent.size
        if sent.problem is not None:
            why = f"replacing it from {copy.url} failed: {sent.problem.detail}"
            return _Outcome(total, _not_repaired(problem, why), hashed=False)
        fixed = Problem(problem.kind, problem.url, f"{problem.detail}; repaired from {copy.url}")
        return _Outcome(total, fixed, hashed=True, done="repaired")


def _not_repaired(problem: Problem, why: str) -> Problem:
    return Problem(problem.kind, problem.url, f"{problem.detail}; not repaired: {why}")
