"""Storage unreachable: every command fails within a few seconds with one line and exit 3, the
refresh under either engine included (checked before an engine starts); no traceback and no
password in the output."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.mongo_server import free_port

ROOT = Path(__file__).resolve().parents[2]
SPEC = ROOT / "examples" / "datasets.yaml"
#: "A few seconds": the server-selection timeout of the first contact is 3 s.
BOUND_S = 15.0


@pytest.fixture(scope="module")
def refused_uri() -> str:
    return f"mongodb://alice:pa%2Fss%40word@127.0.0.1:{free_port()}/team"


COMMANDS = [
    ["ls"],
    ["show", "iris"],
    ["status"],
    ["status", "iris", "--json"],
    ["gc"],
    ["unlock", "iris"],
    ["refresh", "iris", "--spec", str(SPEC), "--engine", "local"],
    ["refresh", "iris", "--spec", str(SPEC), "--engine", "prefect"],
]


def test_every_command_fails_fast_with_exit_3(refused_uri: str) -> None:
    started = time.monotonic()
    procs = [
        (argv, subprocess.Popen(
            [sys.executable, "-m", "datastack.cli", *argv, "--storage", refused_uri],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
        ))
        for argv in COMMANDS
    ]
    for argv, proc in procs:
        out, err = proc.communicate(timeout=120)
        elapsed = time.monotonic() - started
        assert proc.returncode == 3, (argv, out, err)
        assert elapsed < BOUND_S, (argv, f"{elapsed:.1f} s")
        lines = [line for line in err.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("datastack: storage unavailable"), lines
        assert "Traceback" not in out + err and "ss@word" not in out + err
        assert "pa%2Fss" not in out + err and "alice:***@" in err
