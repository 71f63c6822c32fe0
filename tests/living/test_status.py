"""Freshness states, ``datastack status`` (table, JSON, exit codes) and ``ls`` states."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from datastack.catalog.status import DatasetStatus
from datastack.cli import main
from datastack.store import Store

NOW = dt.datetime.now(dt.UTC)


def _catalog(backend: tuple[str, Any]) -> Any:
    from datastack.catalog import FileCatalog, MongoCatalog

    kind, target = backend
    if kind == "file":
        return FileCatalog(target)
    if kind == "mongomock":
        return MongoCatalog.from_database(target)
    return MongoCatalog(target)


def test_states_from_checks(backend: tuple[str, Any]) -> None:
    catalog = _catalog(backend)
    every_minute = "* * * * *"
    catalog.record_check("never-ok", "failed", reason="HTTP 404", at=NOW)
    catalog.record_check(
        "fresh", "published", version=1, schedule=every_minute, at=NOW - dt.timedelta(seconds=30)
    )
    catalog.record_check(
        "late", "unchanged", version=4, schedule=every_minute, at=NOW - dt.timedelta(minutes=3)
    )
    catalog.record_check("broken", "published", version=2, at=NOW - dt.timedelta(days=9))
    catalog.record_check("broken", "failed", reason="gate schema: changed", at=NOW)
    catalog.record_check("broken", "failed", reason="gate schema: changed again", at=NOW)
    catalog.record_check("busy", "published", version=1, at=NOW)
    catalog.record_check("busy", "locked", reason="locked by host:1", at=NOW)
    states = {s.name: s.state(NOW) for s in catalog.statuses()}
    assert states == {
        "never-ok": "failing", "fresh": "fresh", "late": "overdue",
        "broken": "failing", "busy": "fresh",
    }
    broken = catalog.status("broken")
    assert broken.consecutive_failures == 2 and broken.version == 2
    assert broken.last_failure["reason"] == "gate schema: changed again"
    assert catalog.status("busy").last_check["outcome"] == "locked"  # no failure
    assert DatasetStatus("x").state(NOW) == "never"


def test_overdue_is_two_missed_intervals_plus_grace() -> None:
    last = dt.datetime(2026, 1, 1, 3, 0, tzinfo=dt.UTC)
    status = DatasetStatus("d", schedule="0 3 * * *").after_check("published", at=last)
    assert status.state(last + dt.timedelta(days=1, hours=12)) == "fresh"  # one run missed
    assert status.state(last + dt.timedelta(days=2, minutes=2)) == "fresh"  # in the grace
    assert status.state(last + dt.timedelta(days=2, minutes=6)) == "overdue"
    hourly = DatasetStatus("h", schedule="@hourly").after_check("published", at=last)
    assert hourly.state(last + dt.timedelta(hours=2, minutes=10)) == "overdue"


def test_status_command_json_and_exit_codes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = tmp_path / "store"
    catalog = Store.open(storage).catalog
    catalog.record_check("ok", "published", version=3, at=NOW)
    assert main(["status", "--storage", str(storage), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert set(row) >= {"name", "state", "version", "schedule", "last_success", "last_check",
                        "last_failure"}
    assert (row["name"], row["state"], row["version"], row["last_failure"]) == (
        "ok", "fresh", 3, None)
    catalog.record_check("bad", "failed", reason="RetrievalError: HTTP 503 [bold]x[/bold]", at=NOW)
    assert main(["status", "--storage", str(storage), "--json"]) == 1
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["bad"]["state"] == "failing"
    assert rows["bad"]["last_failure"]["reason"].startswith("RetrievalError: HTTP 503")
    assert set(rows["bad"]["last_failure"]) == {"at", "reason"}
    assert main(["status", "ok", "--storage", str(storage)]) == 0  # only the listed ones
    assert main(["status", "bad", "--storage", str(storage)]) == 1
    out = capsys.readouterr().out
    assert "failing" in out and "[bold]x[/bold]" in out  # markup printed as text
    assert main(["status", "nope", "--storage", str(storage)]) == 4


def test_ls_shows_states_and_datasets_published_before_status_documents(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datastack.catalog import VersionRecord

    storage = tmp_path / "store"
    catalog = Store.open(storage).catalog
    record = catalog.begin(VersionRecord(name="old", spec_hash="h"))
    catalog.publish("old", record.version)  # no status document: published by an older version
    assert main(["ls", "--storage", str(storage), "--json"]) == 0
    [row] = json.loads(capsys.readouterr().out)
    assert row["name"] == "old" and row["state"] == "fresh"
    assert main(["status", "--storage", str(storage), "--json"]) == 0
    [status] = json.loads(capsys.readouterr().out)
    assert status["version"] == 1 and status["last_success"] is not None
