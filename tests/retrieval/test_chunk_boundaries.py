"""Content-defined chunk boundaries of raw copies (#24.3): an insertion or a deletion anywhere
re-stores only the chunks around it, the cuts do not depend on how the stream is read, and
every chunk is within the minimum and the maximum size."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from datastack.storage._boundaries import WINDOW, Boundaries, byte_values
from datastack.storage.chunked import ChunkSink, open_raw
from datastack.storage.filesystem import FileStorageConnector

CHUNK = 64 * 1024


def _random(n: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(n)


def _csv(rows: int) -> bytes:
    rng = random.Random(5)
    return b"".join(f"{i},{rng.random():.6f},{rng.randint(0, 99)},{'abc'[i % 3]}\n".encode()
                    for i in range(rows))


def _sink(storage: Any, chunk_bytes: int = CHUNK, **options: Any) -> ChunkSink:
    return ChunkSink(storage, lambda d: f"datasets/d/raw/chunks/{d}", chunk_bytes=chunk_bytes,
                     **options)


def _store(tmp_path: Path) -> FileStorageConnector:
    return FileStorageConnector(tmp_path / "store", fsync=False)


DATA = {"random": lambda: _random(3_000_000), "csv": lambda: _csv(120_000)}


@pytest.mark.parametrize("kind", sorted(DATA))
@pytest.mark.parametrize(("where", "insert", "delete"), [
    (0.5, 1, 0), (0.5, 100, 0), (0.31, 5000, 0), (0.77, 200_000, 0), (0.02, 777, 0),
    (0.5, 0, 1), (0.4, 0, 5000), (0.66, 0, 150_000), (0.5, 3000, 3000),
], ids=["ins1", "ins100", "ins5000", "ins200k", "ins-near-start", "del1", "del5000",
        "del150k", "replace"])
def test_an_edit_in_the_middle_re_stores_only_the_chunks_around_it(
    tmp_path: Path, kind: str, where: float, insert: int, delete: int
) -> None:
    data = DATA[kind]()
    assert 2_000_000 < len(data) < 5_000_000
    storage = _store(tmp_path)
    first = _sink(storage)
    first.set_resource("d/raw/a", data)
    assert first.written == len(data) and len(first.chunks) > 20
    at = int(len(data) * where)
    edited = data[:at] + _random(insert, seed=9) + data[at + delete:]
    sink = _sink(storage)
    info = sink.set_resource("d/raw/b", edited)
    assert info.sha256 == hashlib.sha256(edited).hexdigest()
    new = [c for c in sink.chunks if c not in first.chunks]
    assert sink.written == sum(size for _, size in new)
    # re-stored: the inserted bytes, the old chunks the edit touches and at most the two
    # after them (where the cuts fall in step again); a fixed-offset cut would store every
    # byte after the edit again
    ends = np.cumsum([size for _, size in first.chunks])
    touched = int(np.searchsorted(ends, at, side="right"))
    last = int(np.searchsorted(ends, at + delete, side="right")) + 2
    around = sum(size for _, size in first.chunks[touched : last + 1])
    assert sink.written <= insert + around <= insert + (last - touched + 1) * 4 * CHUNK
    assert sink.written - insert < (len(edited) - at) // 3
    assert len(new) <= last - touched + 2
    record = {"identifier": "datasets/d/raw/fetched-1/b", "chunks": sink.chunks}
    with open_raw(storage, record) as raw:
        assert raw.read() == edited


@pytest.mark.parametrize("block_bytes", [1000, 4095, 65_536 + 7, 1 << 20, 8 << 20])
def test_the_cuts_do_not_depend_on_the_read_blocks(tmp_path: Path, block_bytes: int) -> None:
    data = _random(1_500_000, seed=3)
    storage = _store(tmp_path)
    reference = _sink(storage)
    reference.set_resource("d/raw/a", data)
    sink = _sink(storage, block_bytes=block_bytes)
    sink.set_resource("d/raw/a", io.BufferedReader(io.BytesIO(data), 777))
    assert sink.chunks == reference.chunks and len(sink.chunks) > 10


def test_the_cuts_do_not_depend_on_how_the_bytes_are_fed() -> None:
    """Fed in blocks of random sizes (one byte, a window, many chunks), the cut offsets are
    those of one block."""
    data = _random(600_000, seed=4)
    whole = Boundaries(8192).cuts(data)
    rng = random.Random(1)
    for _ in range(5):
        cuts, offset, boundaries = [], 0, Boundaries(8192)
        while offset < len(data):
            size = rng.choice([1, 2, WINDOW - 1, WINDOW, WINDOW + 1, 1000, 70_000])
            block = memoryview(data)[offset : offset + size]
            cuts += [offset + end for end in boundaries.cuts(block)]
            offset += len(block)
        assert cuts == whole and len(whole) > 30


def test_the_cuts_are_the_same_in_every_run() -> None:
    """Pinned cut offsets: a change of the byte values, the window or the limits would
    re-store every raw copy once (pin the new values only on purpose)."""
    data = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(4000))  # 128,000 bytes
    assert Boundaries(8192).cuts(data)[:6] == PINNED
    assert byte_values(np.arange(4, dtype=np.uint8)).tolist() == PINNED_VALUES


PINNED = [2334, 10046, 13802, 19534, 27984, 31374]
PINNED_VALUES = [2659415780, 3822338839, 1723026284, 3014938235]


def _pattern_cut_everywhere(boundaries: Boundaries) -> bytes:
    """A WINDOW-byte pattern whose window sum is a cut (so a repetition of it has a cut
    candidate at every position)."""
    for seed in range(100_000):
        pattern = _random(WINDOW, seed=seed)
        total = int(byte_values(np.frombuffer(pattern, dtype=np.uint8)).sum(dtype=np.uint64))
        if total % (1 << 32) <= boundaries.limit:
            return pattern
    raise AssertionError("no pattern found")


def test_chunks_are_within_the_minimum_and_the_maximum(tmp_path: Path) -> None:
    storage = _store(tmp_path)
    boundaries = Boundaries(1024)
    assert (boundaries.minimum, boundaries.maximum) == (256, 4096)
    cases = {
        "random": _random(400_000, seed=6),
        "csv": _csv(10_000),
        "no cut (zeros)": bytes(50_000),
        "a cut everywhere": _pattern_cut_everywhere(boundaries) * 800,
    }
    sizes = {}
    for name, data in cases.items():
        sink = _sink(storage, chunk_bytes=1024)
        sink.set_resource("d/raw/a", data)
        sizes[name] = [size for _, size in sink.chunks]
        assert sum(sizes[name]) == len(data)
        assert all(256 <= s <= 4096 for s in sizes[name][:-1]), name
        assert 0 < sizes[name][-1] <= 4096
    assert set(sizes["no cut (zeros)"][:-1]) == {4096}  # forced at the maximum
    assert set(sizes["a cut everywhere"][:-1]) == {256}  # none before the minimum
    for name in ("random", "csv"):  # about the average, with sizes between the bounds
        assert 700 < np.mean(sizes[name]) < 1500 and len(set(sizes[name])) > 50, name
