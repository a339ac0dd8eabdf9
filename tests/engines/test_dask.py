"""Dask distributed: two worker processes (LocalCluster) write through one pickled storage."""

from __future__ import annotations

import logging
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


class DaskEngine:
    """Tasks submitted to a Dask client, each with its arguments pickled by Dask.

    Consecutive tasks go to alternate workers, so that the copies of one content (side by
    side in the plan) run in different processes; left to itself the scheduler sometimes
    gives all of them to one worker.
    """

    name = "dask"
    runs_async = True

    def __init__(self, client: Any) -> None:
        self.client = client

    def run(
        self, calls: Sequence[tuple[Callable[..., Any], tuple[Any, ...]]], timeout: float
    ) -> list[Any]:
        from distributed import wait

        workers = sorted(self.client.scheduler_info()["workers"])
        futures = [
            self.client.submit(fn, *args, pure=False, workers=[workers[i % len(workers)]])
            for i, (fn, args) in enumerate(calls)
        ]
        try:
            wait(futures, timeout=timeout)
            return self.client.gather(futures)
        finally:
            self.client.cancel(futures)


@pytest.fixture(scope="module")
def engine() -> Iterator[DaskEngine]:
    from distributed import Client, LocalCluster

    environment = worker_environment()
    with pytest.MonkeyPatch.context() as patch:
        for name, value in environment.items():
            patch.setenv(name, value)
        # The scheduler runs in this process: keep its INFO lines out of failure reports.
        patch.setattr(logging.getLogger("distributed"), "level", logging.WARNING)
        cluster = LocalCluster(
            n_workers=2,
            processes=True,
            threads_per_worker=4,
            host="127.0.0.1",
            dashboard_address=None,
            env=environment,
            silence_logs=logging.ERROR,
        )
        try:
            with Client(cluster, timeout=60) as client:
                yield DaskEngine(client)
        finally:
            cluster.close(timeout=60)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    parametrize_backends(metafunc)


def test_workers_write_the_same_contents_at_once(
    engine: DaskEngine, backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = backend_info(request, backend_name)
    summary = check_concurrent_writes(engine, backend, STREAM_SIZE, tmp_path / "gate")
    report(request.config, summary)


def test_labox_saves_in_workers_load_on_the_client(
    engine: DaskEngine, backend_name: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    backend = backend_info(request, backend_name)
    summary = check_labox(engine, backend, tmp_path / "labox.db")
    report(request.config, summary)
