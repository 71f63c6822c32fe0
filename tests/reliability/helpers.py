"""Helpers of the fault-injection suite: child processes, streams that fail on cue, datasets
built from local files, and snapshots of folder trees (to prove nothing was written outside the
storage root).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
CHILD = "tests.reliability.child"


# -- payloads ----------------------------------------------------------------------------------
def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


class FailingStream(io.RawIOBase):
    """A readable stream over ``data`` that calls ``on_cue()`` before the read that would pass
    ``cue_bytes`` (then keeps serving data unless ``on_cue`` raised or blocked)."""

    def __init__(self, data: bytes, cue_bytes: int, on_cue: Callable[[], None]) -> None:
        super().__init__()
        self._data = io.BytesIO(data)
        self._cue = cue_bytes
        self._on_cue = on_cue
        self._served = 0
        self.fired = False

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        if not self.fired and self._served >= self._cue:
            self.fired = True
            self._on_cue()
        chunk = self._data.read(-1 if size is None else size)
        self._served += len(chunk)
        return chunk

    def readinto(self, buffer: Any) -> int:
        chunk = self.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# -- child processes ---------------------------------------------------------------------------
def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    env.update(extra or {})
    return env


def start_child(config: dict[str, Any], log: Path, env: dict[str, str] | None = None
                ) -> subprocess.Popen[bytes]:
    """Start ``python -m tests.reliability.child CONFIG_JSON`` with output to ``log``."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", CHILD, json.dumps(config)],
            cwd=ROOT, env=child_env(env), stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )


def finish_child(proc: subprocess.Popen[bytes], log: Path, timeout: float = 120.0
                 ) -> dict[str, Any]:
    """Wait for a child; return the JSON object it printed last (plus its return code)."""
    try:
        proc.wait(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if ln.startswith("{")]
    if not lines:
        raise AssertionError(f"child printed no result (rc={proc.returncode}):\n"
                             f"{log.read_text(errors='replace')[-3000:]}")
    result: dict[str, Any] = json.loads(lines[-1])
    result["returncode"] = proc.returncode
    return result


def run_child(config: dict[str, Any], log: Path, timeout: float = 120.0,
              env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a child to completion; return the JSON object it printed last."""
    return finish_child(start_child(config, log, env), log, timeout)


def release_barrier(barrier: Path, count: int, procs: list[subprocess.Popen[bytes]],
                    timeout: float = 60.0) -> None:
    """Wait until ``count`` children wait at ``barrier``, then release them together."""
    deadline = time.monotonic() + timeout
    while len(list(barrier.parent.glob(barrier.name + ".ready-*"))) < count:
        dead = [p for p in procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"children not ready at the barrier (exited: {len(dead)})")
        time.sleep(0.02)
    barrier.write_text("go")


def wait_for_file(path: Path, proc: subprocess.Popen[bytes], log: Path,
                  timeout: float = 60.0) -> None:
    """Wait until ``path`` exists; fail early if the child exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            return
        if proc.poll() is not None:
            raise AssertionError(
                f"child exited with {proc.returncode} before the cue {path.name}:\n"
                f"{log.read_text(errors='replace')[-3000:]}"
            )
        time.sleep(0.02)
    proc.kill()
    raise AssertionError(f"no cue {path} within {timeout}s:\n{log.read_text(errors='replace')}")


def sigkill(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()  # SIGKILL on POSIX
    proc.wait(timeout=30)
    assert proc.returncode == -9, proc.returncode


# -- trees -------------------------------------------------------------------------------------
def snapshot(root: Path, exclude: tuple[Path, ...] = ()) -> dict[str, str]:
    """relative path -> sha256 (files), "link->target" (symlinks) or "dir", under ``root``."""
    found: dict[str, str] = {}
    excluded = {os.path.abspath(p) for p in exclude}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) not in excluded]
        for name in dirnames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            found[rel] = f"link->{os.readlink(full)}" if os.path.islink(full) else "dir"
        for name in filenames:
            full = os.path.join(dirpath, name)
            if full in excluded:
                continue
            rel = os.path.relpath(full, root)
            if os.path.islink(full):
                found[rel] = f"link->{os.readlink(full)}"
            else:
                try:
                    found[rel] = hashlib.sha256(Path(full).read_bytes()).hexdigest()
                except OSError as exc:  # a device, a FIFO: record it, never read it
                    found[rel] = f"unreadable:{exc.errno}"
    return found


# -- datasets ----------------------------------------------------------------------------------
def sha256_file(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_arrays(folder: Path, n: int, width: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Write ``x.npy`` (n x width float32, random so it does not compress) and ``y.npy``."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, width)).astype(np.float32)
    y = (np.arange(n) % 7 + seed * 10).astype(np.int64)
    np.save(folder / "x.npy", x)
    np.save(folder / "y.npy", y)
    return x, y


def arrays_spec(spec_path: Path, name: str, folder: Path, **fields: Any) -> Path:
    """A spec with one npy dataset ``name`` whose sources are ``folder/x.npy`` and ``y.npy``."""
    import yaml

    sources = [
        {"url": (folder / f).as_uri(), "sha256": sha256_file(folder / f), "role": role}
        for f, role in (("x.npy", "samples"), ("y.npy", "targets"))
    ]
    document = {"datasets": {name: {"sources": sources, "format": "npy", **fields}}}
    spec_path.write_text(yaml.safe_dump(document, sort_keys=False))
    return spec_path


def write_spec(spec_path: Path, datasets: dict[str, Any]) -> Path:
    import yaml

    spec_path.write_text(yaml.safe_dump({"datasets": datasets}, sort_keys=False))
    return spec_path


def read_all(name: str, storage: str, version: int | None = None,
             split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Every (sample, target) of a published split, stacked."""
    import datastack

    it = datastack.load(name, split=split, version=version, storage=storage)
    samples, targets = [], []
    for i in range(len(it)):
        item = it[i]
        samples.append(np.asarray(item[0]))
        targets.append(np.asarray(item[1]))
    return np.stack(samples), np.stack(targets)


def catalog_state(storage: str) -> list[tuple[str, int, str]]:
    """(name, version, status) of every record in the catalog of ``storage``."""
    from datastack.catalog import open_catalog

    catalog = open_catalog(storage)
    rows = []
    for name in catalog.datasets(include_unpublished=True):
        rows.extend((r.name, r.version, r.status) for r in catalog.versions(name, include_all=True))
    return sorted(rows)
