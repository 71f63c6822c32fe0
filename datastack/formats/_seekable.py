"""A seekable local copy of an input stream, for readers that need random access (Parquet's
footer, the zip directory of an ``.xlsx``)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from collections.abc import Iterator
from typing import IO, Any

from datastack.formats.inputs import RawInput


@contextlib.contextmanager
def seekable_input(raw: RawInput) -> Iterator[IO[bytes]]:
    """``raw`` opened as a seekable binary file (a spooled copy when the stream is not)."""
    if raw.path is not None:
        with open(raw.path, "rb") as stream:
            yield stream
        return
    with raw.open() as stream:
        seekable: Any = getattr(stream, "seekable", None)
        if callable(seekable) and seekable():
            yield stream
            return
        with tempfile.TemporaryFile() as copy:
            shutil.copyfileobj(stream, copy, 1024 * 1024)
            copy.seek(0)
            yield copy  # type: ignore[misc]


__all__ = ["seekable_input"]
