"""Child processes of the fault-injection suite: ``python -m tests.reliability.child JSON``.

Each mode does one thing the parent test then disturbs (SIGKILL, a stopped server, a file size
limit) and prints one JSON line with what happened. The injection points are hooks around
public functions (a stream that pauses on cue, a wrapper around ``Catalog.publish``): the code
under test runs unmodified.

Modes
-----
upload   store ``size`` random bytes under ``identifier``; optionally pause/raise on cue
refresh  ``datastack.pipeline.refresh_dataset`` for one dataset of a spec, optionally pausing
         mid-upload of the version's data file or just before the catalog publish
reader   load random samples of a published dataset for ``duration`` s, compare each with the
         expected arrays (an .npz), report counts and errors
"""

from __future__ import annotations

import json
import os
import random
import resource
import signal
import sys
import time
import traceback
from pathlib import Path
from typing import Any


def _pause(marker: str, seconds: float = 3600.0) -> None:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def _limit_file_size(limit: int | None) -> None:
    if limit:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() then fails with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


def _error(exc: BaseException) -> dict[str, Any]:
    return {"ok": False, "error_type": type(exc).__name__,
            "mro": [c.__name__ for c in type(exc).__mro__], "message": str(exc),
            "traceback": traceback.format_exc()[-4000:]}


def _wait_barrier(path: str | None) -> None:
    if not path:
        return
    Path(path + f".ready-{os.getpid()}").write_text("")
    deadline = time.monotonic() + 60
    while not Path(path).exists():
        if time.monotonic() > deadline:
            raise SystemExit("barrier never released")
        time.sleep(0.005)


def upload(cfg: dict[str, Any]) -> dict[str, Any]:
    from datastack.storage import connect
    from tests.reliability.helpers import FailingStream, payload

    _limit_file_size(cfg.get("rlimit_fsize"))
    store = connect(cfg["storage"])
    data = payload(cfg["size"], cfg.get("seed", 0))

    def on_cue() -> None:
        if cfg.get("action") == "raise":
            raise RuntimeError("source died on cue")
        _pause(cfg["marker"])

    stream: Any = FailingStream(data, cfg["cue_bytes"], on_cue) if cfg.get("marker") else data
    try:
        info = store.set_resource(cfg["identifier"], stream)
    except BaseException as exc:
        return _error(exc)
    return {"ok": True, "size": info.size}


def refresh(cfg: dict[str, Any]) -> dict[str, Any]:
    from datastack.factory import factory_for
    from datastack.pipeline.sequence import refresh_dataset
    from datastack.specs import load_selected as select_specs
    from datastack.storage.base import StorageConnector
    from datastack.store import Store
    from tests.reliability.helpers import FailingStream

    _limit_file_size(cfg.get("rlimit_fsize"))
    pause = cfg.get("pause")
    if pause == "upload":
        original_set = StorageConnector.set_resource

        def set_resource(self: StorageConnector, identifier: str, data: Any, **kw: Any) -> Any:
            if identifier.endswith("/data.h5") or "/shards/" in identifier:
                raw = Path(data).read_bytes() if isinstance(data, Path) else data.read()
                data = FailingStream(raw, cfg["cue_bytes"], lambda: _pause(cfg["marker"]))
            return original_set(self, identifier, data, **kw)

        StorageConnector.set_resource = set_resource  # type: ignore[method-assign]
        from datastack.storage.filesystem import FileStorageConnector

        original_adopt = FileStorageConnector.adopt_file

        def adopt_file(self: Any, identifier: str, path: Any, **kw: Any) -> Any:
            # a filesystem store moves a shard in at once: the pause comes after the first
            # (stored, not yet referenced by any version)
            out = original_adopt(self, identifier, path, **kw)
            if identifier.endswith("/data.h5") or "/shards/" in identifier:
                _pause(cfg["marker"])
            return out

        FileStorageConnector.adopt_file = adopt_file  # type: ignore[method-assign]
    elif pause == "publish":
        from datastack.catalog.base import Catalog

        original_publish = Catalog.publish

        def publish(self: Catalog, *args: Any, **kw: Any) -> Any:
            _pause(cfg["marker"], cfg.get("pause_seconds", 3600.0))
            return original_publish(self, *args, **kw)

        Catalog.publish = publish  # type: ignore[method-assign]

    specs = select_specs(cfg["spec"], cfg.get("names"))
    _wait_barrier(cfg.get("barrier"))
    results = []
    for spec in specs:
        try:
            r = refresh_dataset(factory_for(spec), Store.open(cfg["storage"]), lease_ttl_s=cfg.get("lease_ttl", 3600.0),
                                wait_s=cfg.get("wait_s", 0.0), force=cfg.get("force", False))
        except BaseException as exc:
            return {**_error(exc), "results": results}
        results.append(r.to_dict())
    return {"ok": all(r["status"] in {"published", "unchanged"} for r in results),
            "results": results, "pid": os.getpid()}


def reader(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    import datastack

    expected = np.load(cfg["expected"])
    x, y = expected["x"], expected["y"]
    rng = random.Random(cfg.get("seed", 0))
    _wait_barrier(cfg.get("barrier"))
    deadline = time.monotonic() + cfg["duration"]
    checked, errors, mismatches, passes = 0, [], 0, 0
    it = datastack.load(cfg["name"], split="train", version=cfg.get("version"),
                        storage=cfg["storage"])
    if len(it) != len(x):
        return {"ok": False, "error_type": "LengthMismatch", "message": f"{len(it)} != {len(x)}"}
    while time.monotonic() < deadline:
        try:
            if cfg.get("sequential"):
                indices = range(len(x))
            else:
                indices = [rng.randrange(len(x)) for _ in range(50)]
            for i in indices:
                sample, target = it[i][:2]
                if not (np.array_equal(np.asarray(sample), x[i]) and int(target) == int(y[i])):
                    mismatches += 1
                checked += 1
            passes += 1
            if cfg.get("reopen"):
                it = datastack.load(cfg["name"], split="train", version=cfg.get("version"),
                                    storage=cfg["storage"])
        except Exception as exc:
            errors.append({"type": type(exc).__name__,
                           "mro": [c.__name__ for c in type(exc).__mro__],
                           "message": str(exc)[:500]})
            if len(errors) > 5:
                break
            time.sleep(0.05)
    return {"ok": not errors and not mismatches, "checked": checked, "passes": passes,
            "mismatches": mismatches, "errors": errors}


MODES = {"upload": upload, "refresh": refresh, "reader": reader}


def main() -> None:
    cfg = json.loads(sys.argv[1])
    try:
        result = MODES[cfg["mode"]](cfg)
    except BaseException as exc:
        result = _error(exc)
    sys.stdout.write("\n" + json.dumps(result, default=str) + "\n")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
