"""Bulk reads of a whole catalog (listings): same answers as per-dataset reads, every backend."""

from __future__ import annotations

from typing import Any

import pytest

from datastack.catalog import Catalog
from datastack.catalog.overview import (
    catalog_entries,
    dataset_details,
    ls_rows,
    problems_first,
)
from tests.catalog.helpers import make_catalog, publish_version, record


@pytest.fixture
def catalog(backend: tuple[str, Any]) -> Catalog:
    return make_catalog(*backend)


def test_latest_records_equal_latest_of_each(catalog: Catalog) -> None:
    for name in ("b", "a", "c"):
        publish_version(catalog, name=name)
    publish_version(catalog, name="a", checksum="b" * 64)
    catalog.begin(record("c", checksum="c" * 64))  # pending: invisible
    catalog.begin(record("pending-only"))
    full = catalog.latest_records()
    assert list(full) == ["a", "b", "c"]
    assert {n: r.version for n, r in full.items()} == {"a": 2, "b": 1, "c": 1}
    assert all(full[n] == catalog.latest(n) for n in full)
    light = catalog.latest_records(light=True)
    assert light["a"].sources == [] and light["a"].schema == {}
    assert light["a"].splits == {"train": 3} and light["a"].version == 2
    assert catalog.datasets() == ["a", "b", "c"]
    assert catalog.datasets(include_unpublished=True) == ["a", "b", "c", "pending-only"]


def test_entries_join_records_and_statuses(catalog: Catalog) -> None:
    publish_version(catalog, name="ok")
    publish_version(catalog, name="broken")
    catalog.record_check("broken", "failed", reason="gate min_samples: 3 < 100")
    catalog.record_check("never-worked", "failed", reason="404")
    entries = catalog_entries(catalog)
    assert [(e.name, e.state) for e in entries] == [
        ("broken", "failing"), ("never-worked", "failing"), ("ok", "fresh"),
    ]
    assert entries[1].record is None
    assert [r["name"] for r in ls_rows(entries)] == ["broken", "ok"]
    assert [e.name for e in problems_first(entries)][-1] == "ok"
    statuses = {s.name: s.summary() for s in catalog.statuses()}
    assert statuses["broken"]["last_failure"]["reason"] == "gate min_samples: 3 < 100"
    assert [s.name for s in catalog.statuses(["ok"])] == ["ok"]
    details = dataset_details(catalog, "ok")
    assert details["version"] == 1 and [v["version"] for v in details["versions"]] == [1]
