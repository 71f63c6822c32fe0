"""One of each (#22.5): one importer of ``"module:attr"`` (the standard library's), one
renderer of sample pictures, catalog modules without import cycles and with names that say
what they hold."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "datastack"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Library modules imported by ``path`` (function-local too; not under TYPE_CHECKING)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped = {
        id(node)
        for guard in ast.walk(tree)
        if isinstance(guard, ast.If) and "TYPE_CHECKING" in ast.unparse(guard.test)
        for stmt in guard.body
        for node in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("datastack")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module and (
            node.module.startswith("datastack")
        ):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return found


def _graph(package: str) -> dict[str, set[str]]:
    folder = ROOT / package.replace(".", "/")
    modules = {_module_name(p): p for p in folder.rglob("*.py")}
    return {name: {m for m in _imports(path) if m in modules and m != name}
            for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state, stack = [], {}, []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                found.append([*stack[stack.index(nxt):], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_the_catalog_has_no_import_cycle() -> None:
    """lease.py <-> leasing.py and base.py <-> gc.py were cycles."""
    graph = _graph("datastack.catalog")
    graph.pop("datastack.catalog", None)  # the package re-exports its modules
    assert _cycles(graph) == []
    assert "datastack.catalog.leases" in graph and "datastack.catalog.lease" not in graph
    assert "datastack.catalog.leasing" not in graph


def test_catalog_modules_open_with_different_docstrings() -> None:
    firsts: dict[str, str] = {}
    for path in sorted((LIBRARY / "catalog").glob("*.py")):
        doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        first = doc.splitlines()[0] if doc else ""
        assert first not in firsts, f"{path.name} and {firsts.get(first)} open with {first!r}"
        firsts[first] = path.name


def test_one_picture_of_which_records_protect_resources() -> None:
    from datastack.catalog import Catalog

    assert not hasattr(Catalog, "referenced_resources") and not hasattr(Catalog, "_protects")


@pytest.mark.parametrize(
    "definition", ["def load_factory_class(", "def load_preprocessor(", "def _resolve(self, name"]
)
def test_module_attr_references_are_resolved_by_pkgutil(definition: str) -> None:
    homes = [p for p in LIBRARY.rglob("*.py") if definition in p.read_text(encoding="utf-8")]
    assert len(homes) == 1, homes
    text = homes[0].read_text(encoding="utf-8")
    assert "pkgutil.resolve_name(" in text and "import_module(" not in text


def test_no_hand_written_module_attr_importer_is_left() -> None:
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        assert not ("import_module(" in text and '.partition(":")' in text), path


def test_module_attr_errors_still_name_the_reference() -> None:
    from datastack.errors import SpecError
    from datastack.factory import load_factory_class
    from datastack.preprocessing import load_preprocessor

    for load, key in ((load_factory_class, "factory"), (load_preprocessor, "preprocessor")):
        with pytest.raises(SpecError, match=f"key '{key}': cannot import 'no_such_mod:X'"):
            load("no_such_mod:X", "demo")
        with pytest.raises(SpecError, match=r"cannot import 'datastack\.factory:Nope\.deeper'"):
            load("datastack.factory:Nope.deeper", "demo")
    assert load_preprocessor("datastack.builtin.cifar:Cifar10Binary").__class__.__name__ == (
        "Cifar10Binary"
    )


def test_the_web_page_draws_no_picture_of_its_own() -> None:
    """Thumbnails come from datastack/preview.py, the renderer of ``show --preview``."""
    for path in sorted((LIBRARY / "web").glob("*.py")):
        text = path.read_text(encoding="utf-8")
        for drawing in ("Image.open(", "fromarray(", "image.thumbnail(", "ImageDraw", "pillow()"):
            assert drawing not in text, f"{path.name} draws pictures ({drawing})"
    samples = (LIBRARY / "web" / "samples.py").read_text(encoding="utf-8")
    assert "from datastack.preview import" in samples
