"""The retriever's abort-and-restart and verify-before-visible hold on every storage backend."""

from __future__ import annotations

from typing import Any

import pytest

from datastack.errors import ChecksumError
from datastack.retrieval import HTTPRetriever, ResourceDefinition
from datastack.storage.base import StorageConnector
from tests.retrieval.servers import Behaviour, FaultyServer

ID = "demo/raw/data.bin"


def make_store(backend: tuple[str, Any]) -> StorageConnector:
    kind, handle = backend
    if kind == "mongomock":
        from datastack.storage.gridfs import GridFSStorageConnector

        return GridFSStorageConnector.from_database(handle)  # type: ignore[no-any-return]
    from datastack.storage import connect

    return connect(handle)


def test_restart_and_checksum_on_backend(
    backend: tuple[str, Any], fast: dict[str, Any], payload: bytes
) -> None:
    store = make_store(backend)
    behaviour = Behaviour(drop_at=30_000, drop_times=1, range_support=False)
    with FaultyServer(payload, behaviour) as server:
        HTTPRetriever(store, **fast).retrieve(
            [ResourceDefinition(ID, server.url(), sha256=server.sha256)]
        )
        assert store.get_resource(ID).read() == payload
        assert len(server.requests) == 2  # the drop forced a restart (write aborted, then redone)

        with pytest.raises(ChecksumError, match="Nothing was stored"):
            HTTPRetriever(store, **fast).retrieve(
                [ResourceDefinition("demo/other", server.url(), sha256="0" * 64)]
            )
    assert store.list_resources() == [ID]
    store.close()
