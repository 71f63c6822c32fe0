"""Run one hostile input in a child process under a memory limit; report what happened.

``python -m tests.reliability.hardening_child CONFIG_JSON`` with CONFIG keys: ``argv`` (a
``datastack`` command line) or ``code`` (Python to exec), ``as_mib`` (RLIMIT_AS), ``fsize_mib``
(RLIMIT_FSIZE). Prints one JSON line: exit code, stdout, stderr, peak RSS (VmHWM, MiB),
seconds, and whether a traceback escaped.
"""

from __future__ import annotations

import contextlib
import io
import json
import resource
import sys
import time
import traceback


def _peak_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return -1.0


def main() -> None:
    cfg = json.loads(sys.argv[1])
    limit = int(cfg.get("as_mib", 3072)) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    if cfg.get("fsize_mib"):
        size = int(cfg["fsize_mib"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    escaped = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            if "argv" in cfg:
                from datastack.cli import main as cli

                code = cli(cfg["argv"])
            else:
                scope: dict[str, object] = {}
                exec(cfg["code"], scope)  # noqa: S102 - the test's own snippet
                code = int(scope.get("code", 0))  # type: ignore[call-overload]
        except BaseException:  # what the suite asserts never happens
            traceback.print_exc()
            escaped, code = True, 99
    print(json.dumps({
        "code": code, "out": out.getvalue(), "err": err.getvalue(), "peak_mib": _peak_mib(),
        "seconds": time.monotonic() - started, "escaped": escaped,
    }))


if __name__ == "__main__":
    main()
