"""A tracked file rewritten within the same second, or with its mtime set back, is published
(#26.6); an untouched one is not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import datastack
from datastack.store import Store


def _csv(first: int) -> bytes:
    rows = "".join(f"{first + i},{(i * 7) % 10},{'ab'[i % 2]}\n" for i in range(30))
    return ("a,b,label\n" + rows).encode()


@pytest.mark.parametrize("mtime", ["same-second", "same-ns"])
def test_tracked_file_rewritten_in_the_same_second_is_published(
    tmp_path: Path, mtime: str
) -> None:
    source = tmp_path / "live.csv"
    source.write_bytes(_csv(10))
    stat = source.stat()
    spec = tmp_path / "spec.yaml"
    spec.write_text(f"datasets:\n  live:\n    sources: [{{url: {source.as_uri()!r}, track: true}}]"
                    "\n    format: csv\n    csv: {target: label}\n")
    storage = tmp_path / "store"
    [first] = datastack.refresh(spec, storage=storage)
    assert (first.status, first.version) == ("published", 1), first.reason
    [again] = datastack.refresh(spec, storage=storage)
    assert again.status == "unchanged", again

    new = _csv(20)
    assert len(new) == len(_csv(10))  # same size: only the bytes differ
    source.write_bytes(new)
    forced = stat.st_mtime_ns + (1 if mtime == "same-second" else 0)
    if mtime == "same-second" and forced // 10**9 != stat.st_mtime_ns // 10**9:
        forced -= 2
    os.utime(source, ns=(stat.st_atime_ns, forced))
    [changed] = datastack.refresh(spec, storage=storage)
    assert (changed.status, changed.version) == ("published", 2), changed
    loaded = datastack.load("live", storage=storage)
    assert float(loaded[0][0][0]) in {float(20 + i) for i in range(30)}
    [still] = datastack.refresh(spec, storage=storage)
    assert still.status == "unchanged", still
    assert [v.version for v in Store.open(storage).catalog.versions("live")] == [1, 2]
