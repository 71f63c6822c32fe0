"""The import graph of the library: no cycles (function-local imports counted, ``TYPE_CHECKING``
ones not) and no import against the layer table of ``docs/architecture.md``; the readers of
the graph and of the table tested on small examples, so each check can fail."""

from __future__ import annotations

from pathlib import Path

from tests.architecture.import_graph import (
    ARCHITECTURE,
    cycles,
    import_graph,
    layer_table,
    library_paths,
    unplaced_modules,
    upward_imports,
)


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_graph_reader_counts_lazy_imports_and_skips_type_checking(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/a.py": "def f():\n    from pkg import b\n",
        "pkg/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.c import X\n"
                    "else:\n    import os\nfrom . import c\n",
        "pkg/c.py": "import pkg.a\n",
        "pkg/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pkg.a\n",
        "pkg/sub/__init__.py": "from .. import d\n",
    })
    graph = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"}  # function-local, `from package import module`
    assert graph["pkg.b"] == {"pkg.c"}  # relative; the TYPE_CHECKING import left out
    assert graph["pkg.d"] == set()
    assert graph["pkg.sub"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_the_library_has_no_import_cycle() -> None:
    found = cycles(import_graph())
    assert not found, f"import cycles (function-local imports count): {found}"


def test_the_layer_check_finds_an_import_that_goes_up(tmp_path: Path) -> None:
    _write(tmp_path, {
        "pkg/__init__.py": "",
        "pkg/low.py": "def f():\n    import pkg.high.top\n",
        "pkg/high/__init__.py": "from pkg.high import top\n",
        "pkg/high/top.py": "import pkg.low\n",
        "pkg/stray.py": "",
    })
    doc = (
        "| level | layer | modules | owns |\n|---|---|---|---|\n"
        "| 1 | low | `__init__.py`, `low.py`, `stray.py` | x |\n"
        "| 2 | high | `high/` | the top (`top.py`) |\n"
    )
    rows = layer_table(doc)
    paths = library_paths(tmp_path, "pkg")
    graph = import_graph(tmp_path, "pkg")
    assert [row.level for row in rows] == [1, 2]
    assert upward_imports(graph, rows, paths) == [("pkg.low", "pkg.high.top")]
    assert unplaced_modules(rows, paths) == []
    assert unplaced_modules(layer_table(doc.replace("(`top.py`)", "")), paths) == ["high/top.py"]
    assert unplaced_modules(rows[1:], paths) == ["__init__.py", "low.py", "stray.py"]


def test_every_module_is_in_the_layer_table() -> None:
    rows = layer_table(ARCHITECTURE.read_text())
    assert rows, "docs/architecture.md has no layer table"
    missing = unplaced_modules(rows, library_paths())
    assert not missing, f"name these modules in their row of docs/architecture.md: {missing}"


def test_no_import_goes_up_against_the_layer_table() -> None:
    rows = layer_table(ARCHITECTURE.read_text())
    found = upward_imports(import_graph(), rows, library_paths())
    assert not found, f"imports against the layer table of docs/architecture.md: {found}"
