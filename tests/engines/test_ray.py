"""Ray: tasks in worker processes (num_cpus=2) write through one storage passed as argument."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from scenarios import (
    STREAM_SIZE,
    backend_info,
    check_concurrent_writes,
    check_labox,
    parametrize_backends,
    report,
    worker_environment,
)

pytestmark = pytest.mark.timeout(480)  # above DEADLINE: engine start-up and checks too

TASK_CPUS = 0.5
"""Four tasks at once on two CPUs, each in its own worker process."""


class RayEngine:
    """Ray tasks, each with its arguments pickled by Ray (its own cloudpickle)."""

    name = "ray"
    runs_async = False  # Ray's tasks are sync functions; async code needs actors

    def __init__(self) -> None:
        self._remotes: dict[Callable[..., Any], Any] = {}

    def run(
        self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float
    ) -> list[Any]:
        import ray

        refs = [self._remote(fn).remote(*args) for fn, args in calls]
        try:
            return ray.get(refs, timeout=timeout)
        except BaseException:
            for ref in refs:
                ray.cancel(ref, force=True)
            raise

    def _remote(self, fn: Callable[..., Any]) -> Any:
        import ray

        if fn not in self._remotes:
            # No retries: a worker that dies must fail the test, not be papered over.
            self._remotes[fn] = ray.remote(num_cpus=TASK_CPUS, max_retries=0)(fn)
        return self._remotes[fn]


@pytest.fixture(scope="module")
def engine() -> Iterator[RayEngine]:
    import ray

    environment = worker_environment()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)  # the raylet, and so every worker, inherits these
        ray.init(
            address="local",  # a new local cluster, never one named by RAY_ADDRESS
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=96 * 2**20,
            runtime_env={"env_vars": environment},
            log_to_driver=False,
        )
        try:
            yield RayEngine()
        finally:
            ray.shutdown()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc)


def test_workers_write_the_same_contents_at_once(
    engine: RayEngine, backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = backend_info(request, backend_name)
    summary = check_concurrent_writes(engine, backend, STREAM_SIZE, tmp_path / "gate")
    report(request.config, summary)


def test_labox_saves_in_workers_load_on_the_client(
    engine: RayEngine, backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = backend_info(request, backend_name)
    summary = check_labox(engine, backend, tmp_path / "labox.db")
    report(request.config, summary)
