"""The graph of imports between the library's modules, read from the source (nothing imported).

Every ``import`` counts, the ones inside functions too (they are lazy for speed, but they still
follow or break the layers); the ones under ``if TYPE_CHECKING:`` do not (they never run).
``from package import name`` is an edge to ``package.name`` when that is a module, else to the
package itself; importing ``a.b.c`` is an edge to ``a.b.c`` only (not to its parents).

The layer table of ``docs/architecture.md`` gives each module a level (:func:`layer_table`); an
import from a lower level to a higher one goes up against it (:func:`upward_imports`).

Run it to print the cycles and the upward imports: ``python -m tests.architecture.import_graph``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "datastack"
ARCHITECTURE = ROOT / "docs" / "architecture.md"


def library_modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the library."""
    modules: dict[str, Path] = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under ``node``, skipping the bodies of ``if TYPE_CHECKING:``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(other) if not isinstance(
                    other, (ast.Import, ast.ImportFrom)
                ) else iter([other])
            continue
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        else:
            yield from _import_nodes(child)


def _base(module: str, is_package: bool, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    if not is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join([*parts, node.module] if node.module else parts)


def imports_of(module: str, path: Path, known: set[str]) -> set[str]:
    """The library modules that ``module`` imports (see the module docstring)."""
    found: set[str] = set()
    for node in _import_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _base(module, path.name == "__init__.py", node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        found.update(t for t in targets if t in known and t != module)
    return found


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, set[str]]:
    modules = library_modules(root, package)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module, each sorted (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot overflow
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found)


@dataclass(frozen=True)
class Layer:
    """One row of the layer table: its level, the paths it names, and its whole text."""

    level: int
    paths: tuple[str, ...]
    text: str


def layer_table(doc: str) -> list[Layer]:
    """The rows ``| level | layer | modules | ... |`` of the architecture page's layer table.

    ``modules`` names paths inside the package in backquotes: ``store.py``, ``storage/`` (a
    whole package), ``iterators/__init__.py`` (a package's face alone).
    """
    rows = []
    for line in doc.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) >= 3 and cells[0].isdigit():
            paths = tuple(re.findall(r"`([\w/.]+(?:\.py|/))`", cells[2]))
            rows.append(Layer(int(cells[0]), paths, line))
    return rows


def layer_of(path: str, rows: list[Layer]) -> Layer | None:
    """The row naming ``path`` itself, else the row of its closest package folder."""
    best: tuple[int, Layer] | None = None
    for row in rows:
        for named in row.paths:
            if path == named or (named.endswith("/") and path.startswith(named)):
                if best is None or len(named) > best[0]:
                    best = (len(named), row)
    return best[1] if best else None


def upward_imports(
    graph: dict[str, set[str]], rows: list[Layer], paths: dict[str, str]
) -> list[tuple[str, str]]:
    """Every import ``(importer, imported)`` whose imported module has a higher level."""
    found = []
    for module, imported in sorted(graph.items()):
        here = layer_of(paths[module], rows)
        for other in sorted(imported):
            there = layer_of(paths[other], rows)
            if here is not None and there is not None and there.level > here.level:
                found.append((module, other))
    return found


def unplaced_modules(rows: list[Layer], paths: dict[str, str]) -> list[str]:
    """Modules in no row, or in a package's row that does not name their file."""
    missing = []
    for module, path in sorted(paths.items()):
        row = layer_of(path, rows)
        named = row is not None and (path in row.paths or path.endswith("__init__.py")
                                     or f"`{path.rsplit('/', 1)[-1]}`" in row.text)
        if not named:
            missing.append(path)
    return missing


def library_paths(root: Path = ROOT, package: str = PACKAGE) -> dict[str, str]:
    """Dotted module name -> its file relative to the package folder (``storage/base.py``)."""
    modules = library_modules(root, package)
    return {name: str(path.relative_to(root / package)) for name, path in modules.items()}


if __name__ == "__main__":  # pragma: no cover
    graph = import_graph()
    found = cycles(graph)
    print(f"{len(found)} cycles")
    for component in found:
        print(" <-> ".join(component))
    rows = layer_table(ARCHITECTURE.read_text())
    up = upward_imports(graph, rows, library_paths())
    print(f"{len(up)} imports against the layer table")
    for importer, imported in up:
        print(f"{importer} -> {imported}")
    for path in unplaced_modules(rows, library_paths()):
        print(f"not in the layer table: {path}")
