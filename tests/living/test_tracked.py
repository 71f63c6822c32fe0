"""Tracked sources: scheduled refreshes publish upstream changes, through the gates."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import datastack
from datastack.cli import main
from datastack.store import Store
from tests.living.upstream import HTML_ERROR_PAGE, Upstream, serve, table, tracked_spec


@pytest.fixture(params=[True, False], ids=["validators", "no-validators"])
def upstream(request: pytest.FixtureRequest) -> Upstream:
    return Upstream("/live.csv", table(40), validators=request.param)


def _refresh(spec: Path, storage: Path) -> Any:
    [result] = datastack.refresh(spec, storage=storage)
    return result


def test_tracked_source_publishes_changes_and_nothing_when_unchanged(
    httpserver: Any, upstream: Upstream, tmp_path: Path
) -> None:
    spec = tracked_spec(tmp_path / "spec.yaml", serve(httpserver, upstream))
    storage = tmp_path / "store"
    first = _refresh(spec, storage)
    assert (first.status, first.version) == ("published", 1), first.reason
    catalog = Store.open(storage).catalog
    recorded = catalog.latest("live").sources[0]
    assert recorded["track"] is True and len(recorded["sha256"]) == 64
    assert (recorded["etag"] is not None) == upstream.validators

    upstream.reset_counts()
    again = _refresh(spec, storage)
    assert again.status == "unchanged" and again.version == 1, again
    if upstream.validators:  # a conditional request answered 304: nothing downloaded
        assert upstream.body_bytes == 0 and upstream.requests == ["HEAD"]
    else:  # downloaded, sha256 compared, the extra copy dropped
        assert upstream.body_bytes == len(upstream.data)
        raw = Store.open(storage).storage.list_resources("datasets/live/raw/")
        assert len(raw) == 1, raw

    upstream.set(table(44))  # rows appended upstream
    changed = _refresh(spec, storage)
    assert (changed.status, changed.version) == ("published", 2), changed.reason
    assert len(datastack.load("live", storage=storage)) == 44
    assert len(datastack.load("live", version=1, storage=storage)) == 40
    latest = catalog.latest("live").sources[0]
    assert latest["sha256"] != recorded["sha256"]  # the bytes actually downloaded
    status = catalog.status("live")
    assert status is not None and status.state() == "fresh" and status.version == 2


@pytest.mark.parametrize(
    ("bad", "gate"),
    [
        (HTML_ERROR_PAGE, "gate format"),
        (table(40, columns=("a", "label")), "gate schema"),
        (table(12), "gate max_change"),
        (table(3), "gate min_samples"),
        (b"a,b,label\n1,2,ab\n3,4", "FormatError: live.csv: row 3"),  # cut mid-row
    ],
    ids=["html-page", "dropped-column", "shrunk", "too-few", "truncated"],
)
def test_bad_upstream_fails_a_gate_and_keeps_the_last_good_version(
    httpserver: Any, tmp_path: Path, bad: bytes, gate: str, capsys: pytest.CaptureFixture[str]
) -> None:
    upstream = Upstream("/live.csv", table(40))
    spec = tracked_spec(
        tmp_path / "spec.yaml", serve(httpserver, upstream),
        extra="    expect: {min_samples: 10, max_change: 0.5}\n",
    )
    storage = tmp_path / "store"
    assert _refresh(spec, storage).status == "published"
    upstream.set(bad)
    capsys.readouterr()
    code = main(["refresh", "--spec", str(spec), "--storage", str(storage), "--engine", "local"])
    out, err = capsys.readouterr()
    assert code == 1 and "live" in err and gate in err, err
    assert "Traceback" not in err and out == ""
    assert err.count(gate) == 1  # the failure is printed once
    catalog = Store.open(storage).catalog
    assert [v.version for v in catalog.versions("live")] == [1]
    assert len(datastack.load("live", storage=storage)) == 40  # the last good version
    assert not [v for v in catalog.versions("live", include_all=True) if v.status == "pending"]
    status = catalog.status("live")
    assert status is not None and status.state() == "failing"
    assert status.last_failure is not None and gate in status.last_failure["reason"]
    assert status.consecutive_failures == 1 and status.version == 1
    assert main(["status", "live", "--storage", str(storage)]) == 1
    upstream.set(table(42))  # upstream recovers: the next refresh publishes, status is fresh
    recovered = _refresh(spec, storage)
    assert recovered.status == "published" and recovered.version is not None
    assert recovered.version == 2  # the failed attempt did not consume a number (#27.6)
    assert main(["status", "live", "--storage", str(storage)]) == 0


def test_schema_change_allowed_by_the_spec(httpserver: Any, tmp_path: Path) -> None:
    upstream = Upstream("/live.csv", table(40))
    spec = tracked_spec(
        tmp_path / "spec.yaml", serve(httpserver, upstream),
        extra="    expect: {schema_change: true, classes: [ab, a, b]}\n",
    )
    storage = tmp_path / "store"
    assert _refresh(spec, storage).status == "published"
    upstream.set(table(40, columns=("a", "label")))
    assert _refresh(spec, storage).version == 2


def test_expect_classes_and_missing_values(httpserver: Any, tmp_path: Path) -> None:
    upstream = Upstream("/live.csv", table(40))
    spec = tracked_spec(
        tmp_path / "spec.yaml", serve(httpserver, upstream),
        extra="    expect: {classes: [a], max_missing: 0.1}\n",
    )
    result = _refresh(spec, tmp_path / "store")
    assert result.status == "failed" and "gate classes" in result.reason
    assert "['b']" in result.reason  # names the unexpected class
    upstream.set(b"a,b,label\n" + b"".join(b"1,,a\n" if i % 3 else b"1,2,a\n" for i in range(30)))
    result = _refresh(spec, tmp_path / "store")
    assert result.status == "failed" and "gate max_missing" in result.reason
    assert "expected at most 10.0%" in result.reason


def test_pinned_source_changed_upstream_is_reported(httpserver: Any, tmp_path: Path) -> None:
    import hashlib

    upstream = Upstream("/pinned.csv", table(30))
    url = serve(httpserver, upstream)
    spec = tmp_path / "spec.yaml"
    digest = hashlib.sha256(upstream.data).hexdigest()
    spec.write_text(
        f"datasets:\n  pinned:\n    sources: [{{url: {url!r}, sha256: {digest}}}]\n"
        "    format: csv\n"
    )
    storage = tmp_path / "store"
    assert _refresh(spec, storage).status == "published"
    upstream.set(table(31))
    result = _refresh(spec, storage)
    assert result.status == "unchanged" and result.version == 1
    assert result.warnings and "changed upstream" in result.warnings[0]
    status = Store.open(storage).catalog.status("pinned")
    assert status is not None and "changed upstream" in status.last_check["warnings"][0]


def test_force_on_a_tracked_source_fetches_upstream(httpserver: Any, tmp_path: Path) -> None:
    upstream = Upstream("/live.csv", table(40))
    spec = tracked_spec(tmp_path / "spec.yaml", serve(httpserver, upstream))
    storage = tmp_path / "store"
    assert _refresh(spec, storage).status == "published"
    upstream.reset_counts()
    [forced] = datastack.refresh(spec, storage=storage, force=True)
    assert forced.status == "published" and forced.version == 2
    assert upstream.body_bytes == len(upstream.data)  # fetched again, not the stored copy


def test_validators_recorded_for_reused_raw_copies(httpserver: Any, tmp_path: Path) -> None:
    """A pinned raw copy that is reused still gets ETag/Last-Modified recorded (change
    detection must not switch itself off)."""
    import hashlib

    upstream = Upstream("/pinned.csv", table(30))
    url = serve(httpserver, upstream)
    digest = hashlib.sha256(upstream.data).hexdigest()
    spec = tmp_path / "spec.yaml"
    text = (f"datasets:\n  pinned:\n    sources: [{{url: {url!r}, sha256: {digest}}}]\n"
            "    format: csv\n")
    spec.write_text(text)
    storage = tmp_path / "store"
    assert _refresh(spec, storage).status == "published"
    spec.write_text(text + "    seed: 3\n")  # spec changed: new version from the stored copy
    result = _refresh(spec, storage)
    assert result.version == 2
    source = Store.open(storage).catalog.latest("pinned").sources[0]
    assert source["reused"] is True and source["etag"] == upstream.etag
