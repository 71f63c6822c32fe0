"""The architecture holds: the library stands without its orchestrator, one home per concept,
modules and functions of readable size, dispatch through registries."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "datastack"


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_library_entry_points_import_neither_flows_nor_prefect() -> None:
    out = _run(
        "import sys\n"
        "import datastack.cli, datastack.pipeline.sequence, datastack.api\n"
        "import datastack.pipeline.engines\n"
        "import datastack.factory, datastack.store, datastack.formats, datastack.specs\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'flows', 'prefect'}))"
    )
    assert out == "[]"


def test_local_refresh_through_the_cli_never_imports_prefect(tmp_path: Path) -> None:
    csv = tmp_path / "t.csv"
    csv.write_text("a,b,y\n1,2,x\n3,4,y\n5,6,x\n")
    import hashlib

    digest = hashlib.sha256(csv.read_bytes()).hexdigest()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"datasets:\n  t:\n    sources: [{{url: {csv.as_uri()}, sha256: {digest}}}]\n"
        "    format: csv\n"
    )
    out = _run(
        "import sys\n"
        "from datastack.cli import main\n"
        f"code = main(['refresh', '--spec', {str(spec)!r}, '--storage', "
        f"{str(tmp_path / 'store')!r}, '--engine', 'local'])\n"
        "print(code, sorted({m.split('.')[0] for m in sys.modules} & {'flows', 'prefect'}))"
    )
    assert out.splitlines()[-1] == "0 []"


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "import_module":
            for arg in node.args:
                if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                    found.add(arg.value.split(".")[0])
    return found


@pytest.mark.parametrize("path", sorted(LIBRARY.rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_library_module_imports_the_orchestrator(path: Path) -> None:
    assert not _imports(path) & {"flows", "prefect", "prefect_dask"}


def test_modules_and_functions_have_readable_sizes() -> None:
    too_long: list[str] = []
    for path in sorted(LIBRARY.rglob("*.py")):
        text = path.read_text()
        lines = len(text.splitlines())
        if lines > 500:
            too_long.append(f"{path.relative_to(ROOT)}: {lines} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > 80:
                    too_long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length}")
    assert not too_long, too_long


def test_one_class_name_per_concept() -> None:
    """No two modules of the library define a class of the same name (two ``_Opened`` once)."""
    seen: dict[str, str] = {}
    clashes = []
    for path in sorted(LIBRARY.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef):
                where = str(path.relative_to(ROOT))
                if node.name in seen and seen[node.name] != where:
                    clashes.append((node.name, seen[node.name], where))
                seen.setdefault(node.name, where)
    assert not clashes, clashes


def test_engine_registry() -> None:
    from datastack.errors import ConfigurationError
    from datastack.pipeline.engines import ENGINES, resolve_engine

    assert "local" in ENGINES and "prefect" in ENGINES  # the flows package's entry point
    assert resolve_engine("local") == "local"
    with pytest.raises(ConfigurationError, match="unknown refresh engine 'airflow'"):
        resolve_engine("airflow")


def test_registries_name_what_they_know() -> None:
    from datastack.errors import ConfigurationError
    from datastack.formats import format_names, get_format
    from datastack.retrieval import RETRIEVERS
    from datastack.storage import BACKENDS

    assert {"csv", "npy", "npz", "hdf5", "idx"} <= set(format_names())
    assert set(RETRIEVERS.names()) == {"file", "http", "https"}
    assert set(BACKENDS.names()) == {"file", "mongodb"}
    with pytest.raises(ConfigurationError, match="unknown format 'xlsx'; known: csv"):
        get_format("xlsx")
