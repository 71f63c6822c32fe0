"""The original in-process registry of dataset factories."""

from __future__ import annotations

from typing import Any

from data_stack._errors import DatasetNotFoundError
from data_stack._factory import BaseDatasetFactory


class DatasetRepository:
    """Dataset factories by identifier; ``get`` asks the factory for an iterator."""

    def __init__(self) -> None:
        self._base_factory_dict: dict[str, BaseDatasetFactory] = {}

    def register(self, identifier: str, dataset_factory: BaseDatasetFactory) -> None:
        self._base_factory_dict[identifier] = dataset_factory

    def get(
        self, identifier: str, config: dict[str, Any] | None = None, **config_items: Any
    ) -> Any:
        """``factory.get_dataset_iterator(config)``; keyword items (``split="train"``, the
        older calling style) are merged into ``config``.

        Raises :class:`datastack.errors.DatasetNotFoundError` for an unknown identifier.
        """
        factory = self._base_factory_dict.get(identifier)
        if factory is None:
            known = ", ".join(sorted(self._base_factory_dict)) or "none"
            raise DatasetNotFoundError(
                f"no dataset factory registered as {identifier!r} (registered: {known}); "
                "call register(identifier, factory) first"
            )
        if config_items:
            config = {**(config or {}), **config_items}
        return factory.get_dataset_iterator(config)


__all__ = ["DatasetRepository"]
