"""The read path never writes: load, ls, show and status send no write command to MongoDB
(they work for a user with only the ``read`` role). Checked through pymongo's command
monitoring in a fresh process."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

import datastack
from tests.command_probe import LISTEN, WRITES

PROBE = LISTEN + r"""
import datastack
from datastack.cli import main

uri = sys.argv[1]
it = datastack.load("ro", storage=uri)
total = float(sum(float(it[i][0].sum()) for i in range(len(it))))
codes = [main(["ls", "--storage", uri, "--json"]), main(["show", "ro", "--storage", uri]),
         main(["status", "--storage", uri, "--json"])]
print(json.dumps({"commands": sorted(set(seen)), "codes": codes, "total": total}))
"""


@pytest.mark.mongo
def test_load_ls_show_status_send_no_write_command(mongo_uri: str, tmp_path: Path) -> None:
    data = tmp_path / "t.csv"
    data.write_text("a,b,y\n" + "".join(f"{i},{i * 2},{i % 2}\n" for i in range(20)))
    digest = hashlib.sha256(data.read_bytes()).hexdigest()
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        f"datasets:\n  ro:\n    sources: [{{url: {data.as_uri()}, sha256: {digest}}}]\n"
        "    format: csv\n"
    )
    [result] = datastack.refresh(spec, storage=mongo_uri)
    assert result.status == "published", result.reason
    done = subprocess.run(
        [sys.executable, "-c", PROBE, mongo_uri], capture_output=True, text=True, timeout=120,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["codes"] == [0, 0, 0]
    assert report["total"] == sum(i + i * 2 for i in range(20))  # the data was read
    assert "find" in report["commands"]  # the probe saw the reads
    assert not set(report["commands"]) & WRITES, report["commands"]
