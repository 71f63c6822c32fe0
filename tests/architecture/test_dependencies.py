"""Declared dependencies match what the library imports (#22.7): every third-party module that
``datastack/`` imports belongs to a distribution named in ``pyproject.toml`` (core or an extra),
one terminal library (tqdm; rich is gone), whole files hashed with ``hashlib.file_digest``."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = {"datastack", "flows", "data_stack", "deployments"}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> tuple[set[str], set[str]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

    def names(items: list[str]) -> set[str]:
        return {_normal(re.split(r"[<>=!~; \[]", item, maxsplit=1)[0]) for item in items}

    extras = set().union(*(names(v) for v in project["optional-dependencies"].values()))
    return names(project["dependencies"]), extras


def _imported_modules() -> dict[str, str]:
    """Top-level module -> first file importing it (function-local imports included)."""
    found: dict[str, str] = {}
    for path in sorted((ROOT / "datastack").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                tops = [alias.name.split(".")[0] for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                tops = [node.module.split(".")[0]]
            else:
                continue
            for top in tops:
                if top not in sys.stdlib_module_names and top not in OURS:
                    found.setdefault(top, str(path.relative_to(ROOT)))
    return found


def test_every_imported_third_party_module_is_declared() -> None:
    core, extras = _declared()
    owners = packages_distributions()
    missing = {
        module: where
        for module, where in _imported_modules().items()
        if not ({_normal(d) for d in owners.get(module, [module])} & (core | extras))
    }
    assert missing == {}, f"imported but not declared in pyproject.toml: {missing}"


def test_urllib3_is_a_core_dependency_and_rich_is_gone() -> None:
    core, extras = _declared()
    assert "urllib3" in core  # subclassed in retrieval/_deadline.py
    assert "tqdm" in core and "rich" not in core | extras
    assert "rich" not in _imported_modules()


def test_whole_files_are_hashed_with_file_digest() -> None:
    """A loop of ``read`` + ``update`` over an opened file is what file_digest does."""
    pattern = re.compile(r"open\([^)]*\"rb\"\)[^\n]*\n(?:[^\n]*\n){0,2}[^\n]*\.update\(")
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("datastack", "benchmarks")
        for path in sorted((ROOT / folder).rglob("*.py"))
        if pattern.search(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []
