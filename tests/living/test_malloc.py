"""A part prepared on a Dask worker (whose nanny sets ``MALLOC_TRIM_THRESHOLD_``) runs with
glibc's thresholds lifted, and leaves them as Dask set them, memory trimmed
(``datastack/pipeline/_malloc.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from datastack.pipeline import _malloc


class _Libc:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def mallopt(self, option: int, value: int) -> int:
        self.calls.append(("mallopt", option, value))
        return 1

    def malloc_trim(self, pad: int) -> int:
        self.calls.append(("malloc_trim", pad))
        return 1


def test_lifted_while_a_task_runs_and_restored_after(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _Libc()
    monkeypatch.setattr(_malloc, "_libc", lambda: libc)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    with _malloc.roomy_malloc():
        with _malloc.roomy_malloc():  # a write staging its part again: one lift
            pass
        assert libc.calls == [("mallopt", _malloc.M_MMAP_THRESHOLD, _malloc.ROOMY_MMAP),
                              ("mallopt", _malloc.M_TRIM_THRESHOLD, _malloc.ROOMY_TRIM)]
    assert libc.calls[2:] == [("mallopt", _malloc.M_TRIM_THRESHOLD, 65536),
                              ("mallopt", _malloc.M_MMAP_THRESHOLD, _malloc.DEFAULT_MMAP),
                              ("malloc_trim", 0)]


def test_restored_when_the_task_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _Libc()
    monkeypatch.setattr(_malloc, "_libc", lambda: libc)
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with pytest.raises(ValueError), _malloc.roomy_malloc():
        raise ValueError("a bad part")
    assert libc.calls[-3:-1] == [("mallopt", _malloc.M_TRIM_THRESHOLD, 131072),
                                 ("mallopt", _malloc.M_MMAP_THRESHOLD, _malloc.DEFAULT_MMAP)]
    assert _malloc._depth == 0


def test_nothing_changes_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _Libc()
    monkeypatch.setattr(_malloc, "_libc", lambda: libc)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    with _malloc.roomy_malloc():
        pass
    assert libc.calls == []


def test_the_real_libc_takes_the_calls(monkeypatch: pytest.MonkeyPatch) -> None:
    """On glibc the calls go through (mallopt answers 1 for a setting it took)."""
    libc = _malloc._libc()
    if libc is None:
        pytest.skip("no C library with mallopt here")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "65536")
    assert libc.mallopt(_malloc.M_MMAP_THRESHOLD, _malloc.ROOMY_MMAP) == 1
    with _malloc.roomy_malloc():
        data = bytearray(8 * 1024 * 1024)
        del data


@pytest.mark.parametrize(("env", "fmt", "warmed"), [
    ({"DATASTACK_WORKERS": "2"}, "csv", "LocalPool"),
    ({"DATASTACK_WORKERS": "1"}, "csv", None),
    ({"DATASTACK_WORKERS": "2", "DATASTACK_DASK_ADDRESS": "tcp://127.0.0.1:1"}, "csv",
     "DaskPool"),
    ({"DATASTACK_WORKERS": "2"}, "npz", None),
])
def test_the_workers_are_warmed_while_the_sources_are_fetched(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], fmt: str, warmed: str | None,
) -> None:
    """Only when the pool the settings name will cut the dataset into parts
    (``warm_parallel``): local workers' forkserver, or the Dask workers' imports."""
    from types import SimpleNamespace

    from datastack.pipeline import _parallel
    from datastack.pipeline._pools import DaskPool, LocalPool
    from datastack.specs import load_spec

    calls: list[str] = []
    for pool in (LocalPool, DaskPool):
        monkeypatch.setattr(pool, "warm", lambda self: calls.append(type(self).__name__))
    monkeypatch.delenv("DATASTACK_DASK_ADDRESS", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    options = "csv: {target: y}" if fmt == "csv" else "npz: {samples: x, targets: y}"
    spec = load_spec("datasets:\n  d:\n    sources: [{url: 'https://x/d." + fmt + "', sha256: '"
                     + "0" * 64 + "'}]\n    format: " + fmt + "\n    " + options + "\n")["d"]
    _parallel.warm_parallel(SimpleNamespace(spec=spec))  # type: ignore[arg-type]
    assert calls == ([warmed] if warmed else [])


@pytest.mark.slow
def test_dask_workers_import_what_a_part_needs_before_the_first_part() -> None:
    """A Dask worker's first part spent ~0.5 s of CPU importing pyarrow, h5py, pandas...:
    ``DaskPool.warm`` imports them on every worker beforehand."""
    distributed = pytest.importorskip("distributed")
    from datastack.pipeline._pools import PRELOAD, DaskPool

    def loaded() -> list[str]:
        import sys

        return [name for name in PRELOAD if name in sys.modules]

    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert all("pyarrow.csv" not in found for found in client.run(loaded).values())
        DaskPool(cluster.scheduler_address).warm().join(timeout=60)
        found = client.run(loaded)
    assert len(found) == 2 and all(names == PRELOAD for names in found.values()), found
