"""Reads that meet a fault: a version deleted by gc under a reader, a lost connection."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from datastack.errors import StorageError
from tests.latency_proxy import LatencyProxy
from tests.training.conftest import publish

pytestmark = pytest.mark.mongo


def test_a_reader_of_a_version_deleted_by_gc_is_told_so_and_every_read_fails(
    mongo_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#27.14: the message says gc deleted the version, which one is current and how long
    pinned versions live; later reads fail alike, also those whose blocks are cached."""
    import datastack
    from datastack.store import Store

    monkeypatch.setenv("DATASTACK_CACHE_DIR_BYTES", "0")  # every read goes to GridFS
    publish(mongo_uri, "soak", tmp_path / "v1", 4000, 256, seed=1)  # ~4 MB: many blocks
    it = datastack.load("soak", version=1, storage=mongo_uri)
    first = np.asarray(it[0][0])  # its block is now in the block cache
    assert first.shape == (256,)
    publish(mongo_uri, "soak", tmp_path / "v2", 4000, 256, seed=2)
    store = Store.open(mongo_uri)
    report = store.catalog.gc(store.storage, keep=1, grace_seconds=0)
    assert "soak" in str(report.to_dict())

    messages = []
    for read in (lambda: it[len(it) - 1], lambda: it[0], lambda: it.get_batch([0, 1, 2])):
        with pytest.raises(StorageError) as info:
            read()
        messages.append(str(info.value))
    message = messages[0]
    assert "deleted by `datastack gc`" in message, message
    assert "current version is 2" in message and "--keep" in message and "--grace" in message
    assert "get_resource()" not in message
    assert messages[1] == messages[2] == message  # cached block 0 does not succeed silently


class CuttingProxy(LatencyProxy):
    """A TCP proxy that can hold a large reply in the middle, drop every connection (a
    server restart, as clients see it) and listen again on the same port."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        super().__init__(upstream_host, upstream_port, 0.0)
        self.stall = threading.Event()  # armed: hold the next large reply
        self.stalled = threading.Event()  # a reply is held (the read is in flight)

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
                if self.stall.is_set() and len(data) > 100_000:  # chunk data, not a heartbeat
                    self.stall.clear()
                    self.stalled.set()
                    return  # held until cut: the client never gets the rest
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return

    def cut(self) -> None:
        self.stop()

    def restart(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopped.clear()
        self.start()


def test_a_read_interrupted_by_a_lost_connection_resumes_once_the_server_answers(
    mongo_uri: str,
) -> None:
    """#27.13: the connection drops under a read in flight (server restart); the read is
    retried once the server answers again and returns the right bytes, no exception."""
    from datastack.storage.gridfs import GridFSStorageConnector

    host, rest = mongo_uri.removeprefix("mongodb://").split(":", 1)
    port, database = rest.split("/", 1)
    data = np.random.default_rng(3).integers(0, 256, 6_000_000, dtype=np.uint8).tobytes()
    GridFSStorageConnector(mongo_uri).set_resource("big/blob.bin", data)
    proxy = CuttingProxy(host, int(port)).start()
    try:
        store = GridFSStorageConnector(
            f"mongodb://127.0.0.1:{proxy.port}/{database}?directConnection=true"
            "&serverSelectionTimeoutMS=3000&connectTimeoutMS=3000"
        )
        stream = store.open_stream("big/blob.bin")  # sequential, no block cache
        got: list[bytes] = []
        failed: list[BaseException] = []

        def read() -> None:
            try:
                got.append(stream.read())
            except BaseException as exc:
                failed.append(exc)

        proxy.stall.set()
        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        assert proxy.stalled.wait(60)  # the reply is on its way: the read is in flight
        proxy.cut()  # every connection dropped, nothing listening: the server "restarts"
        for _ in range(6000):  # until the read has lost its connection and retries (bounded)
            if store.reconnects or failed:
                break
            time.sleep(0.01)
        proxy.restart()
        reader.join(120)
        assert not reader.is_alive()
        assert not failed, failed
        assert store.reconnects == 1 and got[0] == data
    finally:
        proxy.stop()
