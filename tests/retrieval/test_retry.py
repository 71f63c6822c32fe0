"""The one retry helper (datastack/_retry.py, #22.5) and the loops built on it: the local
engine's step runner, lease waits, download budgets."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest

import datastack._retry as retry
from datastack._retry import Attempts, Backoff, call_with_retries, poll
from datastack.errors import LockHeldError, StorageUnavailableError

ROOT = Path(__file__).resolve().parents[2]
NO_WAIT = Backoff(initial=0.0, maximum=0.0, jitter=0.0)


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The waits of every retry loop (nobody sleeps)."""
    seen: list[float] = []
    monkeypatch.setattr(retry, "_sleep", seen.append)
    return seen


def test_call_with_retries_retries_the_named_errors_then_raises_the_last() -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise TimeoutError(f"attempt {len(calls)}")

    with pytest.raises(TimeoutError, match="attempt 4"):
        call_with_retries(always, retry_on=TimeoutError, max_retries=3, backoff=NO_WAIT)
    assert len(calls) == 4

    def wrong() -> None:
        calls.append(1)
        raise KeyError("not retried")

    calls.clear()
    with pytest.raises(KeyError):
        call_with_retries(wrong, retry_on=TimeoutError, max_retries=3, backoff=NO_WAIT)
    assert len(calls) == 1


def test_backoff_doubles_to_its_cap_and_jitter_only_shortens() -> None:
    exact = Backoff(initial=1.0, maximum=2.0, jitter=0.0)
    assert [exact.delay(n) for n in (1, 2, 3)] == [1.0, 2.0, 2.0]
    jittered = Backoff(initial=4.0, maximum=4.0, jitter=0.5)
    assert all(2.0 <= jittered.delay(1) <= 4.0 for _ in range(200))
    assert exact.delay(1, retry_after=500.0) == exact.max_retry_after


def test_attempts_reset_on_progress_but_keep_the_total() -> None:
    attempts = Attempts(NO_WAIT, max_failures=1)
    attempts.count_failure()
    attempts.progressed()
    attempts.count_failure()
    assert not attempts.exhausted and attempts.total_failures == 2
    attempts.count_failure()
    assert attempts.exhausted


def test_poll_without_wait_tries_once_and_with_wait_until_it_succeeds(
    waits: list[float],
) -> None:
    tries: list[int] = []
    assert poll(lambda: tries.append(1), wait=0.0, backoff=NO_WAIT) is None
    assert len(tries) == 1
    answers = iter([None, None, "got it"])
    assert poll(lambda: next(answers), wait=60.0, backoff=Backoff(0.01, 1.0, 0.0)) == "got it"
    assert waits == [0.01, 0.02]


def test_local_engine_retries_an_unreachable_storage_twice_with_1_and_2_s(
    waits: list[float],
) -> None:
    from datastack.pipeline import run_here

    calls: list[int] = []

    def down() -> None:
        calls.append(1)
        raise StorageUnavailableError("MongoDB at mongodb://x is unreachable")

    with pytest.raises(StorageUnavailableError):
        run_here("publish-version", down)
    assert len(calls) == 3 and waits == [1.0, 2.0]
    calls.clear()
    with pytest.raises(StorageUnavailableError):
        run_here("prepare-version", down)  # never retried here
    assert len(calls) == 1


def test_a_lease_wait_polls_through_the_helper(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from datastack.catalog import FileCatalog

    catalog = FileCatalog(tmp_path)
    holder = catalog.lease("iris", owner="host-a:1:x", ttl=600)
    waits: list[float] = []

    def pause(seconds: float) -> None:  # the holder lets go during the third pause
        waits.append(seconds)
        if len(waits) == 3:
            holder.release()

    monkeypatch.setattr(retry, "_sleep", pause)
    lease = catalog.lease("iris", owner="host-b:2:y", ttl=30, wait=600)
    assert lease.token == holder.token + 1
    assert len(waits) == 3 and all(0 < w <= 1.0 for w in waits)
    assert waits[2] > waits[0]  # backing off
    with pytest.raises(LockHeldError, match="locked by 'host-b:2:y'"):
        catalog.lease("iris", owner="host-c:3:z", ttl=30)


def test_no_other_retry_loop_sleeps_on_its_own() -> None:
    """Every wait between attempts in the library goes through datastack/_retry.py."""
    offenders = []
    for path in sorted((ROOT / "datastack").rglob("*.py")):
        if path.name == "_retry.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "time.sleep(" in text or "random.random()" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
    assert "sleep" in inspect.signature(call_with_retries).parameters
