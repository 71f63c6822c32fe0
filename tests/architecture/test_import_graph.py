"""The import graph of the library: no cycles (function-local imports counted, ``TYPE_CHECKING``
ones not), and the reader of the graph itself tested on a small package."""

from __future__ import annotations

from pathlib import Path

from tests.architecture.import_graph import cycles, import_graph

#: Cycles still present, each to be opened by the work named beside it (#22). The test fails
#: on any other cycle, and on one of these once it is gone (so the list only shrinks).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {
    ("datastack.api", "datastack.factory", "datastack.pipeline.build",
     "datastack.pipeline.retrieve", "datastack.pipeline.sequence"): "one refresh entry point",
    ("datastack.formats.array_iterators", "datastack.formats.idx", "datastack.formats.npy"):
        "array headers read below the iterators",
    ("datastack.formats.csv", "datastack.formats.table_iterators", "datastack.formats.tables"):
        "table iterators below the table formats",
    ("datastack.iterators.base", "datastack.iterators.views"): "views registered, not imported",
    ("datastack.web.app", "datastack.web.routes"): "routes take what they need from a module below",
}


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
    found = {tuple(component) for component in cycles(import_graph())}
    unexpected = sorted(found - set(KNOWN_CYCLES))
    gone = sorted(set(KNOWN_CYCLES) - found)
    assert not unexpected, f"import cycles: {unexpected}"
    assert not gone, f"these cycles are gone: drop them from KNOWN_CYCLES: {gone}"
