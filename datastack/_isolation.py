"""Run a function in a forked child, so that a crash there cannot take the caller down.

HDF5 (through h5py) can crash the whole process on hostile files or when the disk fills up
mid-write (measured: a segfault while closing a half-written file); in a child, such a crash
becomes a :class:`~datastack.errors.StorageError` and the caller cleans up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from datastack._env import env_bool
from datastack.errors import StorageError

T = TypeVar("T")


def _child(conn: Any, func: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        conn.send(("ok", func(*args)))
    except BaseException as exc:
        try:
            conn.send(("error", exc))
        except Exception:  # unpicklable exception: send its text
            conn.send(("error", StorageError(f"{type(exc).__name__}: {exc}")))
    finally:
        conn.close()


def run_isolated(func: Callable[..., T], *args: Any, what: str) -> T:
    """Run ``func(*args)`` in a forked child process and return its result.

    Set ``DATASTACK_ISOLATE=0`` to run in-process (debugging); it always does on platforms
    without ``fork`` and inside daemonic processes (Dask workers), which may not start
    children.
    """
    import multiprocessing

    if (
        not env_bool("DATASTACK_ISOLATE", True)
        or "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon  # e.g. a Dask worker: no children allowed
    ):
        return func(*args)
    ctx = multiprocessing.get_context("fork")
    parent, child = ctx.Pipe(duplex=False)
    process = ctx.Process(target=_child, args=(child, func, args), daemon=True)
    process.start()
    child.close()
    try:
        status, payload = parent.recv()
    except EOFError:
        process.join()
        code = process.exitcode
        detail = f"signal {-code}" if code is not None and code < 0 else f"exit code {code}"
        raise StorageError(
            f"{what} crashed ({detail}) while writing the HDF5 file: is the disk full or an "
            "input file corrupt? Nothing was published; free space or fix the input and retry"
        ) from None
    finally:
        parent.close()
    process.join()
    if status == "error":
        raise payload
    return payload  # type: ignore[no-any-return]


__all__ = ["run_isolated"]
