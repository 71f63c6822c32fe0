"""The C library of this process, loaded once, for the few calls Python does not wrap:
``sync_file_range`` (:mod:`datastack._fs`), ``mmap``/``munmap`` at a chosen address
(:mod:`datastack.canonical._joined_map`), ``mallopt``/``malloc_trim``
(:mod:`datastack.pipeline._malloc`).

``dlopen(NULL)``: the symbols this process has loaded already (no ``find_library``, which
runs ``ldconfig``). Each caller checks that the function it needs is there (``hasattr``), and
sets its own argument types; the functions differ, so they do not clash.
"""

from __future__ import annotations

import ctypes
import functools
import sys
from typing import Any


@functools.lru_cache(maxsize=1)
def libc() -> Any:
    """The process's C library (errno kept for :func:`ctypes.get_errno`), or ``None``
    where there is none to load (Windows)."""
    if sys.platform == "win32":  # pragma: no cover - not a platform datastack runs on
        return None
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover - a process without a dynamic loader
        return None


__all__ = ["libc"]
