"""The vectorised block arithmetic of the block reader: block numbers of byte ranges, and
``read_rows`` (rows at scattered offsets, one lookup and one fetch) against plain slicing."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from datastack.resources import StreamedResource
from datastack.storage._gather import block_numbers
from tests.storage.test_cache import make


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(-50, 1200), st.integers(-50, 1200)), max_size=30),
       st.integers(1, 300))
def test_block_numbers_are_the_blocks_each_range_touches(
    ranges: list[tuple[int, int]], block: int
) -> None:
    size = 1000
    expected: set[int] = set()
    for start, end in ranges:
        start, end = max(0, start), min(size, end)
        if end > start:
            expected.update(range(start // block, (end - 1) // block + 1))
    assert block_numbers(ranges, block, size) == sorted(expected)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 350), st.data())
def test_read_rows_equals_slicing_in_any_order(row_bytes: int, data: st.DataObject) -> None:
    """Rows inside one block, across two or more (rows longer than a block), repeated and
    unsorted: each is the file's bytes at its offset; one fetch for the batch."""
    raw, fetch, reader, _ = make(size=5_000)
    offsets = np.array(
        data.draw(st.lists(st.integers(0, 5_000 - row_bytes), min_size=1, max_size=40)),
        dtype=np.int64,
    )
    out = bytearray(len(offsets) * row_bytes)
    assert reader.read_rows(offsets, row_bytes, memoryview(out)) == len(out)
    assert bytes(out) == b"".join(raw[o : o + row_bytes] for o in offsets.tolist())
    assert len(fetch.calls) == 1
    again = bytearray(len(out))
    reader.read_rows(offsets, row_bytes, memoryview(again))
    assert again == out and len(fetch.calls) == 1  # every block came from the cache


def test_read_rows_past_the_end_reads_nothing() -> None:
    reader = make(size=1_000)[2]
    out = memoryview(bytearray(20))
    assert reader.read_rows(np.array([0, 990], dtype=np.int64), 10, out) == 10 * 2
    assert reader.read_rows(np.array([0, 991], dtype=np.int64), 10, out) == 0
    assert reader.read_rows(np.array([-1], dtype=np.int64), 10, out[:10]) == 0
    assert reader.read_rows(np.array([], dtype=np.int64), 10, out[:0]) == 0


def test_streamed_resource_read_rows_without_a_hook_coalesces_adjacent_rows() -> None:
    raw = bytes(range(256)) * 8
    resource = StreamedResource.from_bytes("r", raw)
    offsets = np.array([0, 4, 8, 100, 104, 2044], dtype=np.int64)
    out = bytearray(len(offsets) * 4)
    assert resource.read_rows(offsets, 4, memoryview(out)) == len(out)
    assert bytes(out) == b"".join(raw[o : o + 4] for o in offsets.tolist())
