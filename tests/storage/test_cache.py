"""The block cache and reader, tested with no I/O through a counting fetch callable."""

from __future__ import annotations

import io
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from datastack.errors import ConfigurationError, StorageError
from datastack.storage.cache import BlockCache, cache_bytes_from_env
from datastack.storage.reader import BlockReader

BLOCK = 100


class FakeFetch:
    """Serves blocks of ``data`` and records every call."""

    def __init__(self, data: bytes, block: int = BLOCK) -> None:
        self.data = data
        self.block = block
        self.calls: list[list[int]] = []

    def __call__(self, numbers: Sequence[int]) -> Mapping[int, bytes]:
        self.calls.append(list(numbers))
        return {n: self.data[n * self.block : (n + 1) * self.block] for n in numbers}

    @property
    def blocks_fetched(self) -> int:
        return sum(len(c) for c in self.calls)


def make(
    size: int = 10_050, cache_bytes: int = 1 << 20, readahead: int = 1600
) -> tuple[bytes, FakeFetch, BlockReader, BlockCache]:
    data = os.urandom(size)
    fetch = FakeFetch(data)
    cache = BlockCache(cache_bytes)
    reader = BlockReader("f", size, BLOCK, fetch, cache=cache, readahead_bytes=readahead)
    return data, fetch, reader, cache


def test_random_read_fetches_only_the_blocks_touched_once() -> None:
    data, fetch, reader, _ = make()
    reader.seek(250)
    assert reader.read(100) == data[250:350]
    assert fetch.calls == [[2, 3]]
    reader.seek(260)
    assert reader.read(20) == data[260:280]
    assert fetch.calls == [[2, 3]]  # cached
    reader.seek(5_000)
    assert reader.read(1) == data[5_000:5_001]
    assert fetch.calls == [[2, 3], [50]]  # random access: no read-ahead


def test_lru_is_bounded_in_bytes_and_evicts_oldest() -> None:
    data, fetch, reader, cache = make(cache_bytes=3 * BLOCK)
    for n in (0, 20, 40, 60, 0):  # far apart: no read-ahead
        reader.seek(n * BLOCK)
        assert reader.read(BLOCK) == data[n * BLOCK : (n + 1) * BLOCK]
    assert cache.nbytes <= 3 * BLOCK and len(cache) == 3
    assert cache.evictions >= 1
    assert [c for c in fetch.calls] == [[0], [20], [40], [60], [0]]  # block 0 had been evicted
    cache.put(("f", 99), b"x" * (4 * BLOCK))  # larger than the budget: not stored
    assert ("f", 99) not in cache


def test_sequential_reads_turn_on_growing_read_ahead() -> None:
    data, fetch, reader, _ = make(size=20_000, readahead=1600)
    out = b"".join(iter(lambda: reader.read(50), b""))
    assert out == data
    assert fetch.blocks_fetched == 200  # every block exactly once
    assert len(fetch.calls) < 20  # instead of 200 single-block round trips
    assert max(len(c) for c in fetch.calls) == 1600 // BLOCK + 1  # window capped


def test_read_ahead_off() -> None:
    data, fetch, reader, _ = make(size=2_000, readahead=0)
    assert b"".join(iter(lambda: reader.read(BLOCK), b"")) == data
    assert len(fetch.calls) == 20


def test_prefetch_coalesces_scattered_ranges_into_one_fetch() -> None:
    data, fetch, reader, _ = make()
    reader.seek(0)
    reader.read(10)  # block 0 cached
    ranges = [(5, 15), (1_020, 1_150), (7_777, 7_778), (9_990, 20_000), (300, 300)]
    assert reader.prefetch(ranges) == 5  # blocks 10, 11, 77, 99, 100 (block 0 already there)
    assert fetch.calls[1:] == [[10, 11, 77, 99, 100]]
    for start, end in ranges:
        reader.seek(start)
        assert reader.read(end - start) == data[start:end]
    assert len(fetch.calls) == 2
    assert reader.prefetch([(0, 10)]) == 0 and len(fetch.calls) == 2


def test_large_read_with_no_cache_is_correct_and_bounded_per_fetch() -> None:
    data, fetch, reader, cache = make(size=10_050, cache_bytes=0, readahead=800)
    assert reader.read() == data
    assert cache.nbytes == 0
    assert max(len(c) for c in fetch.calls) <= 800 // BLOCK
    buf = bytearray(3_333)
    reader.seek(1)
    assert reader.readinto(buf) == 3_333 and bytes(buf) == data[1:3_334]


def test_readers_with_the_same_key_share_blocks() -> None:
    data, fetch, reader, cache = make()
    reader.read(1_000)
    other = BlockReader("f", len(data), BLOCK, fetch, cache=cache)
    calls = len(fetch.calls)
    assert other.read(1_000) == data[:1_000]
    assert len(fetch.calls) == calls
    third = BlockReader("g", len(data), BLOCK, FakeFetch(data), cache=cache)
    assert third.read(10) == data[:10] and third.fetch_calls == 1  # other key: own blocks


def test_seek_semantics() -> None:
    data, _, reader, _ = make(size=1_000)
    assert reader.seek(-10, io.SEEK_END) == 990
    assert reader.read() == data[990:]
    assert reader.seek(5_000) == 5_000 and reader.read(10) == b""
    assert reader.readinto(bytearray(5)) == 0
    reader.seek(100)
    assert reader.seek(-50, io.SEEK_CUR) == 50
    with pytest.raises(OSError, match="negative"):
        reader.seek(-1)
    with pytest.raises(ValueError, match="whence"):
        reader.seek(0, 7)
    reader.close()
    with pytest.raises(ValueError, match="closed"):
        reader.read(1)


def test_short_or_missing_block_is_a_storage_error() -> None:
    def broken(numbers: Sequence[int]) -> Mapping[int, bytes]:
        return {n: b"short" for n in numbers if n != 3}

    reader = BlockReader("b", 1_000, BLOCK, broken, cache=BlockCache(1 << 20), name="x/y")
    with pytest.raises(StorageError, match=r"block 0 of x/y is 5 bytes, expected 100"):
        reader.read(10)


def test_empty_resource() -> None:
    reader = BlockReader("e", 0, BLOCK, FakeFetch(b""), cache=BlockCache(10))
    assert reader.read() == b"" and reader.read(5) == b""


def test_cache_bytes_from_env() -> None:
    assert cache_bytes_from_env({}) == 256 * 1024 * 1024
    assert cache_bytes_from_env({"DATASTACK_CACHE_BYTES": "1000"}) == 1000
    assert cache_bytes_from_env({"DATASTACK_CACHE_BYTES": "64M"}) == 64 << 20
    assert cache_bytes_from_env({"DATASTACK_CACHE_BYTES": "1GiB"}) == 1 << 30
    with pytest.raises(ConfigurationError, match="DATASTACK_CACHE_BYTES"):
        cache_bytes_from_env({"DATASTACK_CACHE_BYTES": "lots"})
    with pytest.raises(ConfigurationError):
        BlockCache(-1)


def test_resize_evicts() -> None:
    cache = BlockCache(1_000)
    for n in range(10):
        cache.put(("k", n), b"x" * 100)
    cache.resize(250)
    assert cache.nbytes == 200 and ("k", 9) in cache and ("k", 0) not in cache
    assert cache.discard("k") == 2 and cache.nbytes == 0


@settings(max_examples=60, deadline=None)
@given(
    size=st.integers(0, 3_000),
    ops=st.lists(st.tuples(st.integers(0, 3_100), st.integers(0, 700)), max_size=25),
    cache_bytes=st.sampled_from([0, 250, 1 << 20]),
)
def test_reads_match_the_bytes(size: int, ops: list[tuple[int, int]], cache_bytes: int) -> None:
    data = bytes((i * 7 + 3) % 251 for i in range(size))
    reader = BlockReader(
        "h", size, BLOCK, FakeFetch(data), cache=BlockCache(cache_bytes), readahead_bytes=400
    )
    for pos, n in ops:
        reader.seek(pos)
        if n % 2:
            assert reader.read(n) == data[pos : pos + n]
        else:
            buf = bytearray(n)
            got = reader.readinto(buf)
            assert bytes(buf[:got]) == data[pos : pos + n]


def test_a_block_fetched_by_one_reader_is_waited_for_by_another_not_fetched_again() -> None:
    """Single-flight (#27.1): while one reader's fetch of a block is in flight, a second
    reader (another thread, same cache) that needs that block waits for that fetch."""
    import threading

    from datastack.storage.cache import BlockCache
    from datastack.storage.reader import BlockReader

    data = bytes(range(256)) * 64  # 16 KiB, blocks of 1 KiB
    started, release = threading.Event(), threading.Event()
    calls: list[list[int]] = []

    def slow_fetch(numbers: Any) -> dict[int, bytes]:
        calls.append(list(numbers))
        started.set()
        assert release.wait(60)  # held until the other reader waits for this fetch
        return {n: data[n * 1024 : (n + 1) * 1024] for n in numbers}

    cache = BlockCache(1 << 20)
    first = BlockReader("f", len(data), 1024, slow_fetch, cache=cache, readahead_bytes=0)
    second = BlockReader("f", len(data), 1024, slow_fetch, cache=cache, readahead_bytes=0)
    got: dict[str, bytes] = {}

    def read(name: str, reader: BlockReader, at: int) -> None:
        reader.seek(at)
        got[name] = reader.read(100)

    one = threading.Thread(target=read, args=("first", first, 2048))
    one.start()
    assert started.wait(60)
    two = threading.Thread(target=read, args=("second", second, 2100))
    two.start()
    for _ in range(6000):  # until the second reader waits on the flight (bounded)
        if cache.flight_waits:
            break
        threading.Event().wait(0.01)
    release.set()
    one.join(60)
    two.join(60)
    assert cache.flight_waits == 1
    assert calls == [[2]]  # one fetch for both readers
    assert got == {"first": data[2048:2148], "second": data[2100:2200]}
    assert second.fetch_calls == 0


def test_a_failed_flight_is_fetched_again_by_its_waiter_which_raises() -> None:
    """When the fetch in flight fails, a reader that waited for it fetches the block itself
    (and so gets the error itself); the failed flight leaves nothing registered."""
    import threading

    from datastack.errors import StorageError
    from datastack.storage.cache import BlockCache

    cache = BlockCache(1 << 20)
    flight, mine, others = cache.begin_fetch("f", [1, 2])
    assert flight is not None and mine == [1, 2] and not others
    outcome: list[Any] = []

    def wait_for_it() -> None:
        def fetch(numbers: list[int]) -> dict[int, bytes]:
            raise StorageError(f"boom {numbers}")

        try:
            cache.fetch_once("f", [2], fetch)
        except StorageError as exc:
            outcome.append(str(exc))

    waiter = threading.Thread(target=wait_for_it)
    waiter.start()
    for _ in range(6000):
        if cache.flight_waits:
            break
        threading.Event().wait(0.01)
    cache.end_fetch("f", flight, mine, {})  # the first fetch failed: it brought nothing
    waiter.join(60)
    assert outcome == ["boom [2]"]
    assert cache.begin_fetch("f", [1, 2, 3])[1] == [1, 2, 3]  # nothing left in flight
