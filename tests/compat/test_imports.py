"""Every original module path imports, warns ONCE naming its new import, and stays light."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

# original module -> text its warning must contain (the new import)
MAPPED = {
    "data_stack.dataset.iterator": "datastack.iterators",
    "data_stack.dataset.splitter": "datastack.iterators (random_split",
    "data_stack.dataset.factory": "datastack.iterators",
    "data_stack.dataset.meta": "datastack.iterators",
    "data_stack.dataset.reporting": "datastack.iterators (report, IteratorReport)",
    "data_stack.io.resources": "datastack.resources",
    "data_stack.io.retriever": "datastack.retrieval",
    "data_stack.io.storage_connectors": "datastack.storage.filesystem.FileStorageConnector",
    "data_stack.io.resource_definition": "datastack.retrieval.ResourceDefinition",
    "data_stack.repository.repository": "datastack.load",
    "data_stack.exception": "datastack.errors",
    "data_stack.mnist.factory": 'datastack.load("mnist"',  # the package data_stack.mnist warns
}

SCRIPT = textwrap.dedent(
    """
    import importlib, json, sys, warnings

    heavy = ("h5py", "pymongo", "requests", "torch", "sklearn")
    with warnings.catch_warnings(record=True) as caught:
        import data_stack
    result = {"light": [m for m in heavy if m in sys.modules], "top": len(caught), "mods": {}}
    for name in json.loads(sys.argv[1]):
        with warnings.catch_warnings(record=True) as caught:  # default filters stay in place
            importlib.import_module(name)
        result["mods"][name] = [
            [w.category.__name__, str(w.message), w.filename == __file__] for w in caught
        ]
    with warnings.catch_warnings(record=True) as caught:
        import data_stack.mnist, data_stack.mnist.iterator
    result["mnist_again"] = len(caught)
    print(json.dumps(result))
    """
)


def _run(tmp_path: Path) -> dict:
    script = tmp_path / "importer.py"
    script.write_text(SCRIPT)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONWARNINGS"}
    proc = subprocess.run(
        [sys.executable, str(script), json.dumps(list(MAPPED))],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.splitlines()[-1])


def test_each_module_warns_once_naming_the_new_import_and_import_is_light(tmp_path):
    result = _run(tmp_path)
    assert result["light"] == []  # import data_stack pulls in no heavy dependency
    assert result["top"] == 0
    for name, new in MAPPED.items():
        caught = result["mods"][name]
        assert len(caught) == 1, (name, caught)
        category, message, at_importer = caught[0]
        assert category == "DeprecationWarning"
        announced = "data_stack.mnist" if name.startswith("data_stack.mnist") else name
        assert message.startswith(f"{announced} is deprecated; use "), message
        assert new in message, (name, message)
        # attributed to the importing file, so Python's default filters show it in __main__
        assert at_importer, (name, message)
    assert result["mnist_again"] == 0


def test_public_names_of_the_original_exist():
    import data_stack.dataset.iterator as it
    import data_stack.io.retriever as ret
    import data_stack.io.storage_connectors as sc

    for module, names in (
        (it, ["DatasetIteratorIF", "SequenceDatasetIterator", "InformedDatasetIterator"]),
        (sc, ["StorageConnector", "FileStorageConnector", "StorageConnectorFactory"]),
        (ret, ["RetrieverFactory", "Retriever", "HTTPRetrieverImpl", "FileRetrieverImpl"]),
    ):
        for name in names:
            assert name in module.__all__ and hasattr(module, name)
