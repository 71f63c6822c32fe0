"""Temporary work folders of a refresh, named after their process so that the leftovers of a
killed refresh can be removed by the next refresh or ``datastack gc`` on the same host.

A folder is ``<tmp>/datastack-prepare-<pid>.<start>-<random>``; :func:`sweep_work_dirs`
removes those whose process is gone (never a live one's).

>>> import os
>>> with work_dir() as folder:
...     os.path.basename(folder).startswith("datastack-prepare-")
True
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from datastack._procs import is_gone, process_tag

PREFIX = "datastack-prepare-"
log = logging.getLogger("datastack.pipeline")


@contextlib.contextmanager
def work_dir() -> Iterator[Path]:
    """A new temporary folder of this process, removed with everything in it on exit."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{process_tag()}-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def sweep_work_dirs(root: str | os.PathLike[str] | None = None) -> int:
    """Remove work folders of processes that are gone; return how many were removed."""
    base = Path(root) if root is not None else Path(tempfile.gettempdir())
    removed = 0
    try:
        entries = list(base.iterdir())
    except OSError:
        return 0
    for entry in entries:
        if not entry.name.startswith(PREFIX) or not entry.is_dir() or entry.is_symlink():
            continue
        tag = entry.name[len(PREFIX) :].rpartition("-")[0]
        if tag and is_gone(tag):
            shutil.rmtree(entry, ignore_errors=True)
            removed += 1
            log.info("removed the work folder %s of a refresh that is gone", entry)
    return removed


__all__ = ["PREFIX", "sweep_work_dirs", "work_dir"]
