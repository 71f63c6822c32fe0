"""Where the tasks of a parallel preparation run (``docs/scale.md``): local worker processes
or a running ``dask.distributed`` scheduler; never a scheduler of our own.

Both run a list of jobs and return their results in order. A worker that dies mid-task (the
OS killed it, a segfault): the local pool starts new workers and runs the unfinished jobs
again (each job's effects are idempotent: shards are named by their bytes), up to
:data:`ATTEMPTS` times; Dask retries the task (``retries``) on another worker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from datastack.errors import ConfigurationError, DatastackError

log = logging.getLogger("datastack.pipeline")

#: Runs of a job whose worker died before it is given up.
ATTEMPTS = 3


class LocalPool:
    """``workers`` local processes, used as a context manager. They start from a clean
    ``forkserver`` process: nothing of the refresh (its threads, open files and their HDF5
    locks) is inherited. As with any ``spawn``/``forkserver`` pool, a script calling
    ``datastack.refresh`` with workers keeps its work under ``if __name__ == "__main__":``
    (``docs/scale.md``); a worker never starts a pool of its own."""

    def __init__(self, workers: int) -> None:
        self.workers = int(workers)
        self._executor: Any = None

    def describe(self) -> str:
        return f"{self.workers} local worker processes"

    def slots(self) -> int:
        """How many jobs run at once."""
        return self.workers

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None

    def _pool(self) -> Any:
        if self._executor is None:
            from concurrent.futures import ProcessPoolExecutor

            self._executor = ProcessPoolExecutor(self.workers, mp_context=_context(),
                                                 initializer=share_cores,
                                                 initargs=(self.workers,))
        return self._executor

    def warm(self) -> Any:
        """Start the process local workers fork from (and the modules it preloads) on a
        thread now, while the refresh does other work (the sources' retrieval): the pool's
        first tasks then start at once. Returns the thread."""
        import threading
        from multiprocessing import forkserver

        _context()
        thread = threading.Thread(target=forkserver.ensure_running,
                                  name="datastack-forkserver", daemon=True)
        thread.start()
        return thread

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """``fn(job)`` for every job, in order; jobs whose worker died run again."""
        from concurrent.futures.process import BrokenProcessPool

        results: dict[int, Any] = {}
        for attempt in range(1, ATTEMPTS + 1):
            futures = {k: self._pool().submit(fn, job) for k, job in enumerate(jobs)
                       if k not in results}
            broken = False
            for k, future in futures.items():
                try:
                    results[k] = future.result()
                except BrokenProcessPool:
                    broken = True
            if not broken:
                break
            log.warning("a worker process died; running its jobs again (attempt %d of %d)",
                        attempt + 1, ATTEMPTS)
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        missing = [k for k in range(len(jobs)) if k not in results]
        if missing:
            raise DatastackError(f"{len(missing)} part(s) lost their worker {ATTEMPTS} times; "
                                 "nothing was published. Check the machine's memory and logs")
        return [results[k] for k in range(len(jobs))]


#: What the forkserver of local workers imports once, before it forks them (pandas: pyarrow
#: loads it to turn some columns into numpy; a missing module is skipped).
PRELOAD = ["datastack.pipeline._part_tasks", "numpy", "h5py", "pyarrow", "pyarrow.csv",
           "pyarrow.json", "pandas"]


def preload() -> None:
    """Import :data:`PRELOAD` (those installed) in this process: a worker's first part
    otherwise spends ~0.5 s of CPU importing them (on a Dask worker: 385 modules)."""
    import contextlib
    import importlib

    for name in PRELOAD:
        with contextlib.suppress(ImportError):
            importlib.import_module(name)


def share_cores(workers: int) -> None:
    """A local worker's share of the machine's cores for Arrow's thread pool (its CSV and
    JSON readers): ``workers`` processes that each start a thread per core oversubscribe the
    machine (2 workers on 2 cores: the stage phase of a 1 GB CSV 7.3 -> 6.3 s with one thread
    each). Dask's nanny does the same for its workers (``OMP_NUM_THREADS``)."""
    import os

    try:
        import pyarrow
    except ImportError:  # pragma: no cover - pyarrow comes with every table format
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    pyarrow.set_cpu_count(max(1, (cores or 1) // max(1, workers)))


def _context() -> Any:
    import multiprocessing

    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    return context


class DaskPool:
    """The workers of a running ``dask.distributed`` scheduler at ``address``."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._client: Any = None

    def describe(self) -> str:
        return f"the Dask scheduler at {self.address}"

    def slots(self) -> int:
        """How many jobs run at once: the cluster's worker threads (at least 1)."""
        return max(1, sum(self._client.nthreads().values())) if self._client else 1

    def warm(self) -> Any:
        """Import :data:`PRELOAD` on every worker of the cluster now, on a thread, while the
        refresh does other work (the sources' retrieval); best effort: a cluster that cannot
        be reached is reported when the parts are sent. Returns the thread."""
        import threading

        def run() -> None:
            try:
                from distributed import Client

                with Client(self.address, timeout=10,  # type: ignore[no-untyped-call]
                            set_as_default=False) as client:
                    client.run(preload)
            except Exception as exc:  # a warm-up only
                log.debug("Dask workers not warmed: %s", type(exc).__name__)

        thread = threading.Thread(target=run, name="datastack-dask-warm", daemon=True)
        thread.start()
        return thread

    def __enter__(self) -> DaskPool:
        try:
            from distributed import Client
        except ImportError:
            raise ConfigurationError(
                "--dask needs dask.distributed: pip install 'datastack[dask]'") from None
        # From inside a task of the same cluster (the Prefect flow's Dask task runner) too: the
        # flow's cluster keeps a worker thread free for the parts (flows/refresh.py
        # DATASET_SLOT). Not worker_client()/secede(): a seceded Prefect task loses its API
        # client when the thread that replaces it runs another task.
        try:
            self._client = Client(  # type: ignore[no-untyped-call]
                self.address, timeout=30, set_as_default=False)
        except OSError as exc:
            raise ConfigurationError(f"cannot reach the Dask scheduler at {self.address} "
                                     f"({exc}); start it, or drop --dask") from None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None

    def map(self, fn: Callable[[Any], Any], jobs: Sequence[Any]) -> list[Any]:
        """``fn(job)`` for every job on the cluster, in order, each retried on a lost
        worker."""
        futures = self._client.map(fn, list(jobs), retries=ATTEMPTS - 1, pure=False)
        return list(self._client.gather(futures))


__all__ = ["ATTEMPTS", "DaskPool", "LocalPool", "preload", "share_cores"]
