"""Helpers shared by the ``datastack`` subcommands: arguments, formatting, JSON output."""

from __future__ import annotations

import argparse
from typing import Any

# formatting lives in datastack._format (the web page uses it too); re-exported for the CLI
from datastack._format import fmt_size as fmt_size
from datastack._format import fmt_time as fmt_time
from datastack._format import to_json

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def storage_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URI",
        default=None,
        help="storage URI: a path, file:///abs/path or mongodb://[user:pass@]host/DB "
        "(default: $DATASTACK_STORAGE, else ./.datastack)",
    )


def json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for machines")


def print_json(data: Any) -> None:
    print(to_json(data))


_CONTROL = {c: " " for c in range(32) if c not in (9,)} | {127: " "}


def plain(text: Any, limit: int = 10_000) -> str:
    """Untrusted text (descriptions, column names, reasons) made safe to print: control
    characters and terminal escapes become spaces, the length is bounded.

    >>> plain("a\\x1b[31mred\\nline")
    'a [31mred line'
    """
    cleaned = str(text).translate(_CONTROL)
    return cleaned if len(cleaned) <= limit else cleaned[: limit - 3] + "..."


def print_table(title: str, columns: list[str], rows: list[list[Any]]) -> None:
    """A table on stdout, columns aligned, every cell plain text printed in full (no markup
    is interpreted, nothing is cut to a terminal width: piped output keeps whole values).

    >>> print_table("t", ["a", "bb"], [["x", 1], ["yyy", None]])
    t
    a    bb
    ---  ----
    x    1
    yyy  None
    """
    header = [plain(c, 200) for c in columns]
    body = [[plain(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[j]) for r in body if j < len(r))])
              for j, h in enumerate(header)]
    print(plain(title, 200))
    for line in (header, ["-" * w for w in widths], *body):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)).rstrip())


def open_store(storage: str | None) -> Any:
    """The store of ``--storage``, checked reachable within a few seconds (exit 3 if not)."""
    from datastack.store import Store

    store = Store.open(storage)
    store.ping()
    return store
