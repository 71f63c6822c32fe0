"""One dataset's failure, whatever raised it, is that dataset's failure (#26.17); an unreachable
source fails fast and says why (#27.3). Through the CLI, in a subprocess, local engine."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest

from tests.mongo_server import free_port
from tests.retrieval.rawserver import RawServer, status

ROOT = Path(__file__).resolve().parents[2]
GOOD_CSV = b"a,b,label\n" + b"".join(b"%d,%d,%s\n" % (i, i * 3, b"xy"[i % 2:i % 2 + 1])
                                     for i in range(30))

FAILING_PREPROCESSOR = '''
class Unforeseen(Exception):
    """Not a DatastackError, not one of the errors datastack wraps."""


def prepare(spec, sources, out_path):
    raise Unforeseen("the vendor changed the layout of row 17")


def prepare_index(spec, sources, out_path):
    return [][3]


from datastack.factory import SpecDatasetFactory


class BrokenFactory(SpecDatasetFactory):
    def __init__(self, spec):
        raise LookupError("no such vendor table")
'''


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _cut_workbook(path: Path) -> bytes:
    """A workbook whose sheet XML is cut in the middle (the XML parser raises ParseError)."""
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["a", "b", "label"])
    for i in range(30):
        sheet.append([i, i * 2, "xy"[i % 2]])
    whole = path.with_suffix(".whole.xlsx")
    book.save(whole)
    with zipfile.ZipFile(whole) as z:
        items = {n: z.read(n) for n in z.namelist()}
    xml = items["xl/worksheets/sheet1.xml"]
    items["xl/worksheets/sheet1.xml"] = xml[: len(xml) // 2]
    with zipfile.ZipFile(path, "w") as z:
        for name, data in items.items():
            z.writestr(name, data)
    return path.read_bytes()


def _cli(*argv: str, tmp: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp), str(ROOT)])}
    env.pop("DATASTACK_STORAGE", None)
    return subprocess.run([sys.executable, "-m", "datastack.cli", *argv], capture_output=True,
                          text=True, cwd=tmp, env=env, timeout=timeout)


def test_a_foreign_exception_fails_only_its_dataset(tmp_path: Path) -> None:
    (tmp_path / "vendorprep.py").write_text(FAILING_PREPROCESSOR)
    good = tmp_path / "good.csv"
    good.write_bytes(GOOD_CSV)
    book = _cut_workbook(tmp_path / "cut.xlsx")
    spec = tmp_path / "datasets.yaml"
    spec.write_text(
        "datasets:\n"
        f"  aaa-sheet:\n    sources: [{{url: {tmp_path / 'cut.xlsx'}, sha256: {_sha(book)}}}]\n"
        "    format: excel\n    excel: {target: label}\n"
        f"  bbb-custom:\n    sources: [{{url: {good}, sha256: {_sha(GOOD_CSV)}}}]\n"
        "    preprocessor: vendorprep:prepare\n"
        f"  ccc-index:\n    sources: [{{url: {good}, sha256: {_sha(GOOD_CSV)}}}]\n"
        "    preprocessor: vendorprep:prepare_index\n"
        f"  ddd-factory:\n    sources: [{{url: {good}, sha256: {_sha(GOOD_CSV)}}}]\n"
        "    format: csv\n    factory: vendorprep:BrokenFactory\n"
        f"  zzz-good:\n    sources: [{{url: {good}, sha256: {_sha(GOOD_CSV)}}}]\n"
        "    format: csv\n    csv: {target: label}\n"
    )
    storage = str(tmp_path / "store")
    done = _cli("refresh", "--spec", str(spec), "--storage", storage, "--engine", "local",
                tmp=tmp_path)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stdout.split()[:3] == ["zzz-good", "published", "v1"], done.stdout
    errors = done.stderr
    for name, words in [("aaa-sheet", "ParseError"), ("bbb-custom", "Unforeseen: the vendor"),
                        ("ccc-index", "IndexError"),
                        ("ddd-factory", "LookupError: no such vendor table")]:
        [line] = [x for x in errors.splitlines() if x.startswith(f"datastack: {name} ")]
        assert "failed" in line and words in line, line

    shown = _cli("status", "--storage", storage, "--json", tmp=tmp_path)
    assert shown.returncode == 1, shown.stderr
    rows = {row["name"]: row for row in json.loads(shown.stdout)}
    assert rows["zzz-good"]["state"] == "fresh"
    for name in ("aaa-sheet", "bbb-custom", "ccc-index", "ddd-factory"):
        assert rows[name]["state"] == "failing", rows[name]
    assert "Unforeseen" in json.dumps(rows["bbb-custom"])
    assert _cli("status", "zzz-good", "--storage", storage, tmp=tmp_path).returncode == 0


def test_unreachable_sources_fail_fast_and_say_why(tmp_path: Path) -> None:
    """A refused port, a name that does not resolve and a 404: each asked once, the refresh
    of all three done in well under 20 s with the local engine, the causes in full."""
    refused = free_port()
    with RawServer(status(404, "Not Found")) as server:
        spec = tmp_path / "datasets.yaml"
        pin = "sha256: " + "ab" * 32
        spec.write_text(
            "datasets:\n"
            f"  refused:\n    sources: [{{url: 'http://127.0.0.1:{refused}/a.csv', {pin}}}]\n"
            "    format: csv\n"
            f"  unknown:\n    sources: [{{url: 'https://mirror.datastack-test.invalid/b.csv', "
            f"{pin}}}]\n    format: csv\n"
            f"  missing:\n    sources: [{{url: '{server.url('/c.csv')}', {pin}}}]\n"
            "    format: csv\n"
        )
        started = time.monotonic()
        done = _cli("refresh", "--spec", str(spec), "--storage", str(tmp_path / "store"),
                    "--engine", "local", tmp=tmp_path)
        elapsed = time.monotonic() - started
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert elapsed < 20, f"{elapsed:.1f} s"  # generous: measured ~2 s, mostly the start-up
    assert len(server.requests) == 1  # the 404 is not asked again
    err = done.stderr
    assert "retrying" not in err and "max_retries" not in err and "Traceback" not in err
    [line] = [x for x in err.splitlines() if x.startswith("datastack: refused ")]
    assert f"127.0.0.1 refused the connection on port {refused}" in line
    assert "Connection refused" in line and "datastack refresh" in line
    [line] = [x for x in err.splitlines() if x.startswith("datastack: unknown ")]
    assert "'mirror.datastack-test.invalid' does not resolve" in line and "DNS" in line
    [line] = [x for x in err.splitlines() if x.startswith("datastack: missing ")]
    assert "HTTP 404 Not Found" in line and "not retried" in line
    shown = _cli("status", "--storage", str(tmp_path / "store"), "--json", tmp=tmp_path)
    assert shown.returncode == 1
    states = {row["name"]: row["state"] for row in json.loads(shown.stdout)}
    assert states == {"refused": "failing", "unknown": "failing", "missing": "failing"}
