"""The original dataset meta information (kept here: datastack has no equivalent).

datastack iterators yield ``(sample, target, ...)`` tuples with fixed positions; code that
passes :class:`IteratorMeta` / :class:`DatasetMeta` around keeps working with these classes.
"""

from __future__ import annotations

import abc
from copy import deepcopy
from dataclasses import dataclass


class IdentifiyingInfoIF(abc.ABC):
    """Something with an identifier (the original's spelling)."""

    @property
    @abc.abstractmethod
    def identifier(self) -> str | None:
        raise NotImplementedError


@dataclass
class IteratorMeta:
    """Positions of sample, target and tag in a sample tuple."""

    sample_pos: int = 0
    target_pos: int = 1
    tag_pos: int = 2


class DatasetMetaIF(IdentifiyingInfoIF):
    """Identifier, name, tag and tuple positions of an iterator."""

    @property
    @abc.abstractmethod
    def dataset_name(self) -> str | None:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def dataset_tag(self) -> str | None:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def sample_pos(self) -> int:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def target_pos(self) -> int:
        raise NotImplementedError

    @property
    @abc.abstractmethod
    def tag_pos(self) -> int:
        raise NotImplementedError


class DatasetMeta(DatasetMetaIF):
    """Meta information of one dataset (``iterator_meta=None`` means the default positions)."""

    def __init__(
        self,
        iterator_meta: IteratorMeta | None = None,
        identifier: str | None = None,
        dataset_name: str | None = None,
        dataset_tag: str | None = None,
    ) -> None:
        self._identifier = identifier
        self._dataset_name = dataset_name
        self._dataset_tag = dataset_tag
        self._iterator_meta = iterator_meta if iterator_meta is not None else IteratorMeta()

    @property
    def identifier(self) -> str | None:
        return self._identifier

    @property
    def dataset_name(self) -> str | None:
        return self._dataset_name

    @property
    def dataset_tag(self) -> str | None:
        return self._dataset_tag

    @property
    def iterator_meta(self) -> IteratorMeta:
        return self._iterator_meta

    @property
    def sample_pos(self) -> int:
        return self._iterator_meta.sample_pos

    @property
    def target_pos(self) -> int:
        return self._iterator_meta.target_pos

    @property
    def tag_pos(self) -> int:
        return self._iterator_meta.tag_pos

    def __repr__(self) -> str:
        return (
            f"DatasetMeta(identifier={self.identifier!r}, dataset_name={self.dataset_name!r}, "
            f"dataset_tag={self.dataset_tag!r}, iterator_meta={self._iterator_meta!r})"
        )


class WrappedDatasetMeta(DatasetMetaIF):
    """Meta information derived from another: name and tag fall back to the wrapped ones."""

    def __init__(
        self,
        dataset_meta: DatasetMetaIF,
        identifier: str | None = None,
        dataset_name: str | None = None,
        dataset_tag: str | None = None,
    ) -> None:
        self._dataset_meta = dataset_meta
        self._identifier = identifier
        self._dataset_name = dataset_name
        self._dataset_tag = dataset_tag

    @property
    def identifier(self) -> str | None:
        return self._identifier

    @property
    def dataset_name(self) -> str | None:
        return self._dataset_name or self._dataset_meta.dataset_name

    @property
    def dataset_tag(self) -> str | None:
        return self._dataset_tag or self._dataset_meta.dataset_tag

    @property
    def sample_pos(self) -> int:
        return self._dataset_meta.sample_pos

    @property
    def target_pos(self) -> int:
        return self._dataset_meta.target_pos

    @property
    def tag_pos(self) -> int:
        return self._dataset_meta.tag_pos


class MetaFactory:
    """The original constructors of meta information."""

    @staticmethod
    def get_iterator_meta(sample_pos: int, target_pos: int, tag_pos: int) -> IteratorMeta:
        return IteratorMeta(sample_pos=sample_pos, target_pos=target_pos, tag_pos=tag_pos)

    @staticmethod
    def get_dataset_meta(
        identifier: str | None = None,
        dataset_name: str | None = None,
        dataset_tag: str | None = None,
        iterator_meta: IteratorMeta | None = None,
    ) -> DatasetMeta:
        return DatasetMeta(
            identifier=identifier,
            dataset_name=dataset_name,
            dataset_tag=dataset_tag,
            iterator_meta=iterator_meta,
        )

    @staticmethod
    def copy_dataset_meta(dataset_meta: DatasetMetaIF) -> DatasetMetaIF:
        return deepcopy(dataset_meta)

    @staticmethod
    def get_dataset_meta_from_existing(
        dataset_meta: DatasetMetaIF,
        identifier: str | None = None,
        dataset_name: str | None = None,
        dataset_tag: str | None = None,
    ) -> WrappedDatasetMeta:
        return WrappedDatasetMeta(
            dataset_meta=MetaFactory.copy_dataset_meta(dataset_meta),
            identifier=identifier,
            dataset_name=dataset_name,
            dataset_tag=dataset_tag,
        )


__all__ = [
    "DatasetMeta",
    "DatasetMetaIF",
    "IdentifiyingInfoIF",
    "IteratorMeta",
    "MetaFactory",
    "WrappedDatasetMeta",
]
