"""A tracked HTTP upstream that answers with a partial or endless body never publishes it
(#26.7, #26.13): v1 published from a good server, then the same URL misbehaves (raw-socket
server), the refresh fails naming the source, v1 stays latest, status says failing."""

from __future__ import annotations

from pathlib import Path

import pytest

import datastack
from datastack.cli import main
from datastack.retrieval import Backoff, HTTPRetriever
from datastack.store import Store
from tests.living.upstream import table, tracked_spec
from tests.retrieval.rawserver import RawServer, cut_short, endless, partial_206, whole

GOOD = table(100)


@pytest.fixture(autouse=True)
def _quick_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """Retries of a body cut short are the same, only quicker (real backoff: 0.5 s doubling)."""
    defaults = dict(HTTPRetriever.__init__.__kwdefaults__ or {})
    if "backoff" in defaults:
        defaults["backoff"] = Backoff(initial=0.01, maximum=0.05)
        monkeypatch.setattr(HTTPRetriever.__init__, "__kwdefaults__", defaults)


BAD = {
    # the first 26 rows' worth of bytes, as the partial answer of the issue
    "206-without-range": lambda: partial_206(GOOD, len(table(26))),
    "shorter-than-content-length": lambda: cut_short(GOOD, len(table(26))),
    "chunked-cut-early": lambda: cut_short(GOOD, len(table(26)), chunked=True),
    "closed-before-body": lambda: cut_short(GOOD, 0),
    "endless-over-the-cap": lambda: endless(chunked=False),
}


@pytest.mark.parametrize("bad", list(BAD))
def test_partial_upstream_body_is_never_published(
    tmp_path: Path, bad: str, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("DATASTACK_MAX_SOURCE_BYTES", str(10 * len(GOOD)))
    storage = tmp_path / "store"
    with RawServer(whole(GOOD)) as server:
        url = server.url("/live.csv").replace("http://", "http://reader:t0ps3cret@")
        spec = tracked_spec(tmp_path / "spec.yaml", url)
        [first] = datastack.refresh(spec, storage=storage)
        assert (first.status, first.version) == ("published", 1), first.reason

        server.answer = BAD[bad]()
        [result] = datastack.refresh(spec, storage=storage)
        assert result.status == "failed" and result.version is None, result
        assert "RetrievalError" in result.reason and "live.csv" in result.reason
        assert "127.0.0.1" in result.reason and "t0ps3cret" not in result.reason

        catalog = Store.open(storage).catalog
        assert [v.version for v in catalog.versions("live")] == [1]
        assert len(datastack.load("live", storage=storage)) == 100  # v1, whole
        status = catalog.status("live")
        assert status is not None and status.state() == "failing" and status.version == 1
        assert status.last_failure is not None and "live.csv" in status.last_failure["reason"]
        capsys.readouterr()
        assert main(["status", "live", "--storage", str(storage)]) == 1
        raw = Store.open(storage).storage.list_resources("datasets/live/raw/")
        assert len(raw) == 1, raw  # only v1's download: nothing of the partial one is kept

        server.answer = whole(table(101))  # upstream recovers
        [recovered] = datastack.refresh(spec, storage=storage)
        assert recovered.status == "published", recovered.reason
        assert len(datastack.load("live", storage=storage)) == 101
