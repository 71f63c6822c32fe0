"""datastack: retrieve, store and serve machine-learning datasets as streams.

>>> import datastack
>>> it = datastack.load("iris", split="train")          # doctest: +SKIP
>>> sample, target = it[0][:2]                          # doctest: +SKIP
>>> it.fields, it.as_dict()[0]                           # doctest: +SKIP
>>> datastack.publish("penguins", df, target="species")  # doctest: +SKIP

Heavy modules (h5py, pymongo, requests) are imported on first use, never at ``import datastack``;
prefect and torch are never imported by this package.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from datastack.errors import DatastackError

__version__ = "0.1.0"

# Public name -> module that defines it (imported lazily on first attribute access).
_LAZY = {
    "DatasetFactory": "datastack.factory",
    "SplitExpression": "datastack.splits",
    "Store": "datastack.store",
    "StreamedResource": "datastack.resources",
    "StreamedTextResource": "datastack.resources",
    "StorageConnector": "datastack.storage.base",
    "connect": "datastack.storage",
    "load": "datastack.api",
    "open_store": "datastack.store",
    "refresh": "datastack.api",
    "publish": "datastack.publish",
    "errors": "datastack.errors",
}

if TYPE_CHECKING:  # pragma: no cover
    from datastack.api import load, refresh
    from datastack.factory import DatasetFactory
    from datastack.publish import publish
    from datastack.resources import StreamedResource, StreamedTextResource
    from datastack.splits import SplitExpression
    from datastack.storage import connect
    from datastack.storage.base import StorageConnector
    from datastack.store import Store, open_store


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'datastack' has no attribute {name!r}")
    module = importlib.import_module(module_name)
    value = getattr(module, name, module)  # a module named like its function gives the function
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [
    "DatasetFactory",
    "DatastackError",
    "SplitExpression",
    "StorageConnector",
    "Store",
    "StreamedResource",
    "StreamedTextResource",
    "__version__",
    "connect",
    "load",
    "open_store",
    "publish",
    "refresh",
]
