"""Where ingest work runs: in this process, or on a Dask distributed cluster (a local cluster
by default, a real scheduler by address). Both yield results as they complete."""
from __future__ import annotations

import itertools
import logging
from typing import Callable, Iterable, Iterator

logger = logging.getLogger(__name__)


class SerialExecutor:
    """Runs every task in this process: for tests, debugging and tiny batches."""

    description = "in-process"
    capacity = 1

    def map_unordered(self, fn: Callable, items: Iterable, *args, max_in_flight: int | None = None) -> Iterator:
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

    @property
    def capacity(self) -> int:
        """Tasks the cluster runs at once (its worker threads)."""
        return max(1, sum(self.client.nthreads().values()))

    def map_unordered(self, fn: Callable, items: Iterable, *args, max_in_flight: int | None = None) -> Iterator:
        """Results as they complete. max_in_flight: submit at most that many tasks ahead, taking
        the next item from `items` only when a result has been consumed (so an item built from
        the driver's state sees the results before it); None submits everything at once."""
        from distributed import as_completed

        items = iter(items)
        pending = set()

        def submit(n):
            for item in itertools.islice(items, n):
                future = self.client.submit(fn, item, *args, pure=False)
                pending.add(future)
                queue.add(future)

        queue = as_completed()
        try:
            submit(max_in_flight if max_in_flight else None)
            for future in queue:
                pending.discard(future)
                result = future.result()
                future.release()
                yield result
                if max_in_flight:
                    submit(1)
        finally:
            for future in pending:
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
