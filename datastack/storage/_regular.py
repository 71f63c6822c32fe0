"""Reading files of the local cache safely: regular files only.

Anything else put in a cached object's place (a symlink to ``/dev/zero``, a FIFO, a device, a
folder) must never be read: it would hang the reader or feed it endless bytes.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat


def open_regular(path: str | os.PathLike[str]) -> io.BufferedReader | None:
    """``path`` opened for reading if it is a regular file, else None (a symlink, a FIFO, a
    device or a folder put in the cache's place must never be read: ``/dev/zero`` or a FIFO
    would hang the reader). ``O_NOFOLLOW`` and ``O_NONBLOCK`` make the open itself safe."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    try:
        fd = os.open(path, flags | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EISDIR, errno.ENXIO, errno.EMLINK):
            return None  # a symlink (O_NOFOLLOW), a folder, a FIFO without a writer
        raise
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        return None
    return open(fd, "rb")


def read_regular(path: str | os.PathLike[str]) -> bytes | None:
    """The bytes of ``path`` if it is a regular file (see :func:`open_regular`), else None."""
    fh = open_regular(path)
    if fh is None:
        return None
    with fh:
        return fh.read()


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """The sha256 of ``path`` if it is a regular file, else None."""
    fh = open_regular(path)
    if fh is None:
        return None
    with fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


__all__ = ["file_sha256", "open_regular", "read_regular"]
