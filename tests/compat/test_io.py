"""data_stack.io.* through the shim: resources, storage connectors, definitions, retrievers."""

from __future__ import annotations

import dataclasses
import gc
import hashlib
import io
from pathlib import Path

import pytest

import datastack.errors as errors
import datastack.resources as dsr
from data_stack.exception import (
    DatasetFileCorruptError,
    MaliciousFilePathError,
    ResourceNotFoundError,
)
from data_stack.io.resource_definition import ResourceDefinition
from data_stack.io.resources import ResourceFactory, StreamedResource, StreamedTextResource
from data_stack.io.retriever import (
    FileRetrieverImpl,
    HTTPRetrieverImpl,
    Retriever,
    RetrieverFactory,
)
from data_stack.io.storage_connectors import (
    FileStorageConnector,
    StorageConnector,
    StorageConnectorFactory,
)
from datastack.retrieval import FileRetriever, HTTPRetriever
from datastack.retrieval import ResourceDefinition as DSResourceDefinition
from datastack.storage import StorageConnector as DSStorageConnector
from datastack.storage.filesystem import FileStorageConnector as DSFileStorageConnector

PAYLOAD = b"stuff..." * 100
PAYLOAD_MD5 = hashlib.md5(PAYLOAD).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> FileStorageConnector:
    return StorageConnectorFactory.get_file_storage_connector(str(tmp_path / "store"))


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(PAYLOAD)
    return path


# -- resources ----------------------------------------------------------------------------------
@pytest.mark.parametrize("chunk_size", [1, 7, 4096])
def test_streamed_resource_iterates_chunks_from_the_start(chunk_size):
    resource = StreamedResource("r", io.BytesIO(b"a" * 100), chunk_size=chunk_size)
    for _ in range(2):  # re-entrant: every iteration starts at the beginning
        chunks = list(resource)
        assert b"".join(chunks) == b"a" * 100 and len(chunks[0]) == min(chunk_size, 100)
    assert resource.chunk_size == chunk_size and isinstance(resource, dsr.StreamedResource)


def test_streamed_resource_context_manager_closes_the_buffer():
    with StreamedResource("r", io.BytesIO(b"abc"), chunk_size=2) as resource:
        assert resource.read() == b"abc"
    assert resource.closed
    with pytest.raises(ValueError):
        list(resource)
    buffer = io.BytesIO(b"abc")
    with StreamedResource("unread", buffer):
        pass
    assert buffer.closed  # closed although never read


def test_streamed_resource_leaves_the_buffer_open_when_collected():
    buffer = io.BytesIO(b"abc")
    resource = StreamedResource("r", buffer)
    resource.read(1)
    del resource
    gc.collect()
    assert not buffer.closed and buffer.read() == b"bc"


def test_text_resources():
    binary = StreamedResource("t", io.BytesIO("häh".encode()), chunk_size=2)
    text = StreamedTextResource.from_streamed_resouce(binary, encoding="utf-8")
    assert text.read() == "häh" and text.identifier == "t"
    assert list(text) == ["hä", "h"] and isinstance(text, dsr.StreamedTextResource)
    made = ResourceFactory.get_resource(
        "u", io.BytesIO(b"x\ny"),
        resource_type=ResourceFactory.SupportedStreamedResourceTypes.STREAMED_TEXT_RESOURCE,
    )
    assert isinstance(made, StreamedTextResource) and made.read() == "x\ny"
    assert isinstance(ResourceFactory.get_resource("v", io.BytesIO(b"")), StreamedResource)


# -- storage connectors ---------------------------------------------------------------------------
def test_file_storage_connector_set_get_has(store, tmp_path):
    assert isinstance(store, FileStorageConnector) and isinstance(store, DSFileStorageConnector)
    assert isinstance(store, StorageConnector)
    assert store.root_path == str(tmp_path / "store")
    assert not store.has_resource("a/b.bin")
    store.set_resource("a/b.bin", io.BytesIO(b"abcdef"))
    assert store.has_resource("a/b.bin")
    assert (tmp_path / "store" / "a" / "b.bin").read_bytes() == b"abcdef"  # same layout
    resource = store.get_resource("a/b.bin")
    assert isinstance(resource, StreamedResource) and resource.read() == b"abcdef"
    assert b"".join(resource) == b"abcdef"  # iteration starts from the beginning again
    # a resource is stored whole, even when it was partly read
    resource.seek(3)
    store.set_resource("copy.bin", resource)
    assert store.get_resource("copy.bin").read() == b"abcdef"
    text = store.get_resource(
        "a/b.bin", ResourceFactory.SupportedStreamedResourceTypes.STREAMED_TEXT_RESOURCE
    )
    assert text.read() == "abcdef"


def test_storage_errors_are_original_and_datastack_errors(store):
    with pytest.raises(ResourceNotFoundError) as info:
        store.get_resource("missing")
    assert isinstance(info.value, errors.ResourceNotFoundError)
    with pytest.raises(MaliciousFilePathError) as bad:
        store.set_resource("../escape", io.BytesIO(b"x"))
    assert isinstance(bad.value, errors.InvalidIdentifierError)
    with pytest.raises(errors.ChecksumError):
        store.set_resource("checked", io.BytesIO(b"x"), md5="0" * 32)
    assert not store.has_resource("checked")


class DictConnector(StorageConnector):
    """A 0.0.13-style connector: only the original's three methods."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    def get_resource(self, identifier, resource_type=None):
        if identifier not in self.data:
            raise ResourceNotFoundError(identifier)
        return StreamedResource(identifier, io.BytesIO(self.data[identifier]))

    def set_resource(self, identifier, resource):
        self.data[identifier] = b"".join(resource)

    def has_resource(self, identifier):
        return identifier in self.data


def test_original_style_connector_subclass(source):
    connector = DictConnector()
    assert isinstance(connector, DSStorageConnector)
    definition = ResourceDefinition("x/y.bin", str(source), PAYLOAD_MD5)
    assert RetrieverFactory.get_file_retriever(connector).retrieve([definition]) == ["x/y.bin"]
    assert connector.data["x/y.bin"] == PAYLOAD
    with pytest.raises(DatasetFileCorruptError):
        RetrieverFactory.get_file_retriever(connector).retrieve(
            [ResourceDefinition("bad", str(source), "0" * 32)]
        )
    assert "bad" not in connector.data


# -- resource definitions and retrievers ----------------------------------------------------------
def test_resource_definition_original_signature(source):
    definition = ResourceDefinition("my_resource", str(source), PAYLOAD_MD5)
    assert isinstance(definition, DSResourceDefinition)
    assert definition.md5_sum == definition.md5 == PAYLOAD_MD5
    assert definition.checksum == ("md5", PAYLOAD_MD5)
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    assert ResourceDefinition("r", str(source), sha256=sha).checksum == ("sha256", sha)
    with pytest.raises(errors.ConfigurationError):
        ResourceDefinition("r", str(source), "not-a-digest")
    moved = dataclasses.replace(definition, source=source.as_uri())  # frozen: replace, not set
    assert isinstance(moved, ResourceDefinition) and moved.md5_sum == PAYLOAD_MD5


def test_retriever_factory_types(store):
    http = RetrieverFactory.get_http_retriever(store)
    assert isinstance(http, Retriever) and isinstance(http.retriever_impl, HTTPRetrieverImpl)
    assert isinstance(http.retriever_impl, HTTPRetriever)
    file = RetrieverFactory.get_file_retriever(store)
    assert isinstance(file.retriever_impl, FileRetrieverImpl)
    assert isinstance(file.retriever_impl, FileRetriever)
    assert file.retriever_impl.storage_connector is store


@pytest.mark.parametrize("as_url", [False, True])
def test_file_retriever_verifies_md5(store, source, as_url):
    src = source.as_uri() if as_url else str(source)
    retriever = RetrieverFactory.get_file_retriever(store)
    assert retriever.retrieve([ResourceDefinition("my_resource", src, PAYLOAD_MD5)]) == [
        "my_resource"
    ]
    resource = retriever.retriever_impl.storage_connector.get_resource("my_resource")
    assert hashlib.md5(resource.read()).hexdigest() == PAYLOAD_MD5
    with pytest.raises(DatasetFileCorruptError) as info:
        retriever.retrieve([ResourceDefinition("corrupt", src, "f" * 32)])
    assert isinstance(info.value, errors.ChecksumError)
    assert not store.has_resource("corrupt")


def test_http_retriever_from_local_server(store, http_server):
    (http_server.root / "data.bin").write_bytes(PAYLOAD)
    url = f"{http_server.url}/data.bin"
    retriever = RetrieverFactory.get_http_retriever(store)
    assert retriever.retrieve([ResourceDefinition("dl/data.bin", url, PAYLOAD_MD5)]) == [
        "dl/data.bin"
    ]
    assert store.get_resource("dl/data.bin").read() == PAYLOAD
    assert "/data.bin" in http_server.requests
    with pytest.raises(DatasetFileCorruptError):
        retriever.retrieve([ResourceDefinition("dl/bad.bin", url, "0" * 32)])
    assert not store.has_resource("dl/bad.bin")
    custom = DictConnector()  # no checksum arguments: filled from a verified temporary copy
    retriever = RetrieverFactory.get_http_retriever(custom)
    retriever.retrieve([ResourceDefinition("d", url, PAYLOAD_MD5)])
    assert custom.data == {"d": PAYLOAD}
