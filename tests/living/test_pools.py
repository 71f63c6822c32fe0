"""The local pool's workers (``datastack.pipeline._pools``)."""

from __future__ import annotations

import operator
import os

import pytest

pa = pytest.importorskip("pyarrow")


def test_local_workers_share_the_cores_among_their_arrow_threads() -> None:
    """N workers each reading a CSV with a thread per core oversubscribe the machine: each
    worker's Arrow pool gets its share of the cores (at least one), the refresh keeps all."""
    from datastack.pipeline._pools import LocalPool

    cores = len(os.sched_getaffinity(0))
    before = pa.cpu_count()
    for workers in (2, cores + 1):
        with LocalPool(workers) as pool:
            threads = pool.map(operator.call, [pa.cpu_count] * workers)
        assert threads == [max(1, cores // workers)] * workers, (workers, cores)
    assert pa.cpu_count() == before  # the refresh's own pool is untouched
