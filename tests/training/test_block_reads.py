"""Block-aware shuffling over GridFS: bytes fetched (pymongo command monitoring), prefetch,
and reads through a latency-adding proxy."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pymongo import monitoring

from datastack.iterators.sampler import DatasetSampler
from tests.latency_proxy import LatencyProxy
from tests.training.conftest import publish

pytestmark = pytest.mark.mongo


class ChunkBytes(monitoring.CommandListener):
    """Sums the GridFS chunk bytes in every reply of one database (find/getMore batches)."""

    def __init__(self) -> None:
        self.database = ""
        self.bytes = 0
        self.commands = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        pass

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        if event.database_name != self.database or event.command_name not in ("find", "getMore"):
            return
        cursor = event.reply.get("cursor", {})
        docs = cursor.get("firstBatch", []) + cursor.get("nextBatch", [])
        self.commands += 1
        self.bytes += sum(len(d["data"]) for d in docs if "data" in d)

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


LISTENER = ChunkBytes()
monitoring.register(LISTENER)  # before this module's clients exist (new URIs: new clients)


def _stored_bytes(it: Any) -> int:
    """The bytes of a loaded split's shards (what an epoch reads)."""
    return sum(int(entry["size"]) for entry in it.entries)


def _epoch(it: Any, sampler: DatasetSampler, batch: int) -> None:
    """One epoch of ``sampler``'s order in batches, the sampler's read plan told of each."""
    plan, order = sampler.read_plan(), sampler.indices()
    for lo in range(0, len(order), batch):
        if plan is not None:
            plan.before_batch(it, order[lo : lo + batch], sampler.epoch, lo)
        it.get_batch(order[lo : lo + batch])


def test_block_aware_epoch_reads_each_block_about_once(
    mongo_uri: str, tmp_path: Path, small_block_cache: Any
) -> None:
    import datastack

    x = publish(mongo_uri, "digits", tmp_path / "v1", 15000, 784, seed=1)  # 47 MB, 2x the cache
    LISTENER.database = mongo_uri.rsplit("/", 1)[1]
    it = datastack.load("digits", storage=mongo_uri)
    sampler = DatasetSampler(it, seed=0)
    assert sampler.block_aware_active  # GridFS: on by default
    order = sampler.indices()
    # far from sequential (windows here are half the file: 2x the cache, so the order is
    # coarse at this scale; test_sampler.py checks the statistics on many blocks)
    assert np.mean(np.abs(np.diff(order)) == 1) < 0.01
    assert np.median(np.abs(np.diff(order))) > 1000
    small_block_cache.clear()
    LISTENER.bytes = 0
    _epoch(it, sampler, 128)
    file_bytes = _stored_bytes(it)
    assert LISTENER.bytes <= 1.1 * file_bytes, (LISTENER.bytes, file_bytes)
    assert it.shard(0).resource.stream is not None
    batch = it.get_batch(order[:50])[0]
    assert np.array_equal(batch, x[order[:50]])

    shuffled = DatasetSampler(it, seed=0, block_aware=False)  # full per-sample shuffle
    assert not shuffled.block_aware_active
    small_block_cache.clear()
    LISTENER.bytes = 0
    _epoch(it, shuffled, 128)
    assert LISTENER.bytes > 3 * file_bytes  # what block-aware shuffling avoids


def test_reads_through_a_latency_proxy(mongo_uri: str, tmp_path: Path) -> None:
    import time

    import datastack

    x = publish(mongo_uri, "digits", tmp_path / "v1", 2000, 64, seed=3)
    host, rest = mongo_uri.removeprefix("mongodb://").split(":", 1)
    port, database = rest.split("/", 1)
    with LatencyProxy(host, int(port), delay_s=0.02) as proxy:
        slow = f"mongodb://{host}:{proxy.port}/{database}?directConnection=true"
        it = datastack.load("digits", storage=slow)
        assert np.array_equal(it[5][0], x[5])
        from datastack.storage.cache import default_cache

        default_cache().clear()
        t0 = time.perf_counter()
        assert np.array_equal(it[1500][0], x[1500])
        assert time.perf_counter() - t0 >= 0.02  # one round trip at least: the proxy works
        sampler = DatasetSampler(it, seed=1)
        got = np.concatenate([it.get_batch(b)[0] for b in np.array_split(sampler.indices(), 10)])
        assert np.array_equal(got, x[sampler.indices()])


def _text_length(sample: tuple[Any, ...]) -> tuple[Any, ...]:
    return (len(sample[0]), sample[1])


def test_records_over_gridfs_shuffle_block_aware_and_deal_parts(
    mongo_uri: str, small_block_cache: Any
) -> None:
    """Texts (a records file) report their storage blocks: the sampler's order is block-aware
    (each block fetched about once per epoch, also through `map`, whose batches reach the
    read plan), and with batch_size/num_workers the order is dealt to workers by parts."""
    _records_epoch(mongo_uri, small_block_cache)


def test_records_epoch_bytes_bound_holds_with_the_cores_busy(
    mongo_uri: str, small_block_cache: Any
) -> None:
    """The same epoch with two busy processes started by the test (a loaded machine, as when
    the whole suite runs beside other jobs): block fetches are single-flight, so a block whose
    background fetch is still in flight is waited for, never fetched again (#27.1)."""
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        _records_epoch(mongo_uri, small_block_cache)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _records_epoch(mongo_uri: str, small_block_cache: Any) -> None:
    import datastack

    rng = np.random.default_rng(5)
    texts = ["".join(rng.choice(list("abcdefgh "), int(n))) for n in rng.integers(500, 9000, 6000)]
    datastack.publish("texts", {"text": texts, "y": np.arange(6000) % 4}, target="y",
                      storage=mongo_uri)
    LISTENER.database = mongo_uri.rsplit("/", 1)[1]
    it = datastack.load("texts", storage=mongo_uri)
    stack = it.map(_text_length)
    sampler = DatasetSampler(stack, seed=0)
    assert sampler.block_aware_active
    order = sampler.indices()
    assert sorted(order.tolist()) == list(range(6000))
    assert np.median(np.abs(np.diff(order))) > 50  # far from sequential
    small_block_cache.clear()
    LISTENER.bytes = 0
    reader = it.shard(0)._state().resource.stream  # one shard
    hinted = reader.background_fetches
    plan = sampler.read_plan()
    assert plan is not None
    got = []
    for lo in range(0, 6000, 64):
        plan.before_batch(stack, order[lo : lo + 64], 0, lo)  # the plan sees the mapped batch
        got += stack.get_samples(order[lo : lo + 64])
    assert [g[0] for g in got] == [len(texts[i]) for i in order.tolist()]
    assert reader.background_fetches > hinted  # the plan saw the mapped batches
    file_bytes = _stored_bytes(it)
    assert LISTENER.bytes <= 1.15 * file_bytes, (LISTENER.bytes, file_bytes)

    dealt = DatasetSampler(stack, seed=0, batch_size=64, num_workers=2).indices()
    assert sorted(dealt.tolist()) == list(range(6000))
    assert np.array_equal(dealt[:64], order[:64])  # batch 0: start of part 0
    assert np.array_equal(dealt[64:128], order[47 * 64 : 48 * 64])  # batch 1: part 1
    plain = DatasetSampler(stack, shuffle=False, batch_size=64, num_workers=2).indices()
    assert np.array_equal(plain, np.arange(6000))  # a sequential pass is not dealt


@pytest.mark.parametrize("busy", [False, True], ids=["quiet", "cores-busy"])
def test_first_epoch_with_the_local_cache_on_moves_the_file_about_once(
    mongo_uri: str, tmp_path: Path, small_block_cache: Any, cache_dir: Path, busy: bool
) -> None:
    """#27.2: with the local disk cache on, the read-through fill and the epoch's reads share
    what they fetch (the fill writes blocks into the local copy, readers take them from it
    and add theirs), so the first epoch plus the fill move ~1x the file, not ~2x; also with
    two busy processes beside them."""
    import datastack
    from datastack.storage.diskcache import _FILL_THREADS, default_disk_cache

    x = publish(mongo_uri, "digits", tmp_path / "v1", 15000, 784, seed=1)  # 47 MB
    LISTENER.database = mongo_uri.rsplit("/", 1)[1]
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(2 if busy else 0)]
    try:
        small_block_cache.clear()
        LISTENER.bytes = 0
        it = datastack.load("digits", storage=mongo_uri)  # starts the background fill
        sampler = DatasetSampler(it, seed=0)
        order = sampler.indices()
        _epoch(it, sampler, 128)
        for thread in list(_FILL_THREADS):
            thread.join(120)
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    file_bytes = _stored_bytes(it)
    assert LISTENER.bytes <= 1.15 * file_bytes, (LISTENER.bytes, file_bytes)
    cache = default_disk_cache()
    assert cache is not None and cache.usage() == file_bytes  # the verified copy is there
    assert np.array_equal(it.get_batch(order[:50])[0], x[order[:50]])
    again = datastack.load("digits", storage=mongo_uri)  # from the local copy now
    assert np.array_equal(again.get_batch(order[-50:])[0], x[order[-50:]])
