"""The original MNIST factory, reading the IDX files with numpy (no torch needed).

:class:`MNISTFactory` retrieves the four gzipped IDX files (md5-verified by datastack's
retrievers) into its storage connector under the original identifiers
(``mnist/raw/samples_train.gz``...). Samples are ``(image, target, target)`` as in the
original; ``image`` is a 28x28 float32 numpy array in [0, 1] (the original: the same values as
a torch tensor). There is no preprocessed ``.pt`` step any more: stores holding the raw files
of 0.0.13 are reused as they are.
"""

from __future__ import annotations

import gzip
import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from data_stack._errors import ResourceNotFoundError
from data_stack._factory import BaseDatasetFactory
from data_stack._iterators import SequenceDatasetIterator
from data_stack._meta import IteratorMeta
from data_stack._retrieval import ResourceDefinition, retrieve_into, retriever_for_definitions
from datastack.errors import FormatError

_MIRROR = "ossci-datasets.s3.amazonaws.com/mnist"
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(stream: Any, name: str = "idx") -> NDArray[Any]:
    """The array of an IDX stream (gzipped or plain), in native byte order."""
    stream.seek(0)
    data = stream.read()
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            raise FormatError(f"{name}: corrupt gzip ({exc})") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or not data[3]:
        raise FormatError(f"{name}: not an IDX file (magic {data[:4].hex()})")
    ndim, dtype = data[3], np.dtype(_IDX_DTYPES[data[2]])
    header = 4 + 4 * ndim
    if len(data) < header:
        raise FormatError(f"{name}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", data[4:header])
    if len(data) - header != math.prod(shape) * dtype.itemsize:
        raise FormatError(f"{name}: {len(data) - header} data bytes do not match shape {shape}")
    array = np.frombuffer(data, dtype=dtype, offset=header).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


class _Scaled(Sequence[NDArray[np.float32]]):
    """uint8 images, served as float32 in [0, 1] on access (4x less memory than converted)."""

    def __init__(self, raw: NDArray[Any]) -> None:
        self.raw = raw

    def __len__(self) -> int:
        return len(self.raw)

    def __getitem__(self, index: Any) -> Any:
        return np.asarray(self.raw[index], dtype=np.float32) / np.float32(255.0)


class MNISTIterator(SequenceDatasetIterator):
    """MNIST from two IDX resources (gzipped or plain): ``(image, target, target)``."""

    def __init__(self, samples_stream: Any, targets_stream: Any) -> None:
        try:
            images = read_idx(samples_stream, getattr(samples_stream, "identifier", "samples"))
            labels = read_idx(targets_stream, getattr(targets_stream, "identifier", "targets"))
        finally:
            samples_stream.close()
            targets_stream.close()
        targets = [int(t) for t in labels]
        super().__init__([_Scaled(images), targets, targets])


class MNISTFactory(BaseDatasetFactory):
    """MNIST splits ``"train"`` and ``"test"``: ``get_dataset_iterator({"split": "train"})``.

    ``resource_definitions`` (split -> [samples, targets] definitions) may be replaced, e.g.
    by a local mirror; ``http(s)://`` and ``file://`` sources are both accepted.
    """

    def __init__(self, storage_connector: Any) -> None:
        self.raw_path = "mnist/raw/"
        self.preprocessed_path = "mnist/preprocessed/"
        raw = self.raw_path
        self.resource_definitions: dict[str, list[ResourceDefinition]] = {
            "train": [
                ResourceDefinition(
                    f"{raw}samples_train.gz",
                    f"http://{_MIRROR}/train-images-idx3-ubyte.gz",
                    "f68b3c2dcbeaaa9fbdd348bbdeb94873",
                ),
                ResourceDefinition(
                    f"{raw}labels_train.gz",
                    f"http://{_MIRROR}/train-labels-idx1-ubyte.gz",
                    "d53e105ee54ea40749a09fcbcd1e9432",
                ),
            ],
            "test": [
                ResourceDefinition(
                    f"{raw}samples_test.gz",
                    f"https://{_MIRROR}/t10k-images-idx3-ubyte.gz",
                    "9fb629c4189551a2d022fa330f9573f3",
                ),
                ResourceDefinition(
                    f"{raw}targets.gz",
                    f"https://{_MIRROR}/t10k-labels-idx1-ubyte.gz",
                    "ec29112dd5afa0611ce80d1b7f02629c",
                ),
            ],
        }
        super().__init__(storage_connector)

    def _definitions(self) -> list[ResourceDefinition]:
        return [d for defs in self.resource_definitions.values() for d in defs]

    def check_exists(self) -> bool:
        """Whether every raw file is in the storage."""
        return all(self.storage_connector.has_resource(d.identifier) for d in self._definitions())

    def _retrieve_raw(self) -> None:
        missing = [
            d for d in self._definitions() if not self.storage_connector.has_resource(d.identifier)
        ]
        if missing:
            retrieve_into(self.storage_connector, missing, retriever_for_definitions(missing))

    def _get_iterator(self, split: str) -> MNISTIterator:
        if split not in self.resource_definitions:
            raise ResourceNotFoundError(
                f"Split {split} is not defined (splits: {', '.join(self.resource_definitions)})."
            )
        if not self.check_exists():
            self._retrieve_raw()
        samples, targets = (d.identifier for d in self.resource_definitions[split])
        return MNISTIterator(
            self.storage_connector.get_resource(samples),
            self.storage_connector.get_resource(targets),
        )

    def get_dataset_iterator(
        self, config: dict[str, Any] | None = None
    ) -> tuple[MNISTIterator, IteratorMeta]:
        """``(iterator, IteratorMeta(0, 1, 2))`` for ``config["split"]`` (default ``"train"``)."""
        split = (config or {}).get("split", "train")
        return self._get_iterator(split), IteratorMeta(sample_pos=0, target_pos=1, tag_pos=2)


__all__ = ["MNISTFactory", "MNISTIterator"]
