"""Where ingest work runs: in this process, or on a Dask distributed cluster (a local cluster
by default, a real scheduler by address). Both yield results as they complete."""
from __future__ import annotations

import logging
from typing import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)


class SerialExecutor:
    """Runs every task in this process: for tests, debugging and tiny batches."""

    description = "in-process"

    def map_unordered(self, fn: Callable, items: Iterable, *args) -> Iterator:
        for item in items:
            yield fn(item, *args)

    def close(self):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class DaskExecutor:
    """Maps tasks over a `distributed` cluster. With no address it starts a LocalCluster of
    single-threaded worker processes (torch and numpy already use several threads each)."""

    def __init__(self, scheduler: str | None = None, n_workers: int = 2, threads_per_worker: int = 1):
        from distributed import Client, LocalCluster

        self.cluster = None
        if scheduler:
            self.client = Client(scheduler)
            self.description = f"dask scheduler {scheduler}"
        else:
            self.cluster = LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                        processes=True, dashboard_address=None, silence_logs=logging.ERROR,
                                        worker_dashboard_address=None)
            self.client = Client(self.cluster)
            self.description = f"dask local cluster, {n_workers} workers"

    def map_unordered(self, fn: Callable, items: Iterable, *args) -> Iterator:
        from distributed import as_completed

        futures = [self.client.submit(fn, item, *args, pure=False) for item in items]
        try:
            for future in as_completed(futures):
                yield future.result()
        finally:
            for future in futures:
                future.release()

    def close(self):
        # Workers are terminated on close; their "killed by signal" notices are expected, not news.
        for name in ("distributed", "distributed.nanny", "distributed.scheduler", "distributed.core"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def make_executor(scheduler: str | None = None, workers: int = 2):
    """`workers=0` runs in-process; otherwise a Dask cluster (remote if `scheduler` is given)."""
    if not scheduler and workers <= 0:
        return SerialExecutor()
    return DaskExecutor(scheduler=scheduler or None, n_workers=max(1, workers))
