"""Formatting shared by the command line and the web page (sizes, times, ``--json`` text).

Below both: ``datastack.web`` imports no ``datastack.cli`` module.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any


def shared_line(storage: Mapping[str, Any]) -> str:
    """One line on a sharded version's storage (``catalog.overview.sharing``).

    >>> shared_line({"shards": 3, "bytes": 3072, "previous": 2, "shared_shards": 2,
    ...              "shared_bytes": 2048, "new_shards": 1, "new_bytes": 1024})
    'stored as 3 shards (3.0 KiB): 2 shared with v2 (2.0 KiB), 1 new (1.0 KiB)'
    """
    line = f"stored as {storage['shards']} shards ({fmt_size(storage['bytes'])})"
    workers = storage.get("workers") or []
    if len(workers) > 1:
        line += f", prepared by {len(workers)} workers"
    if storage.get("previous") is None:
        return line
    return (f"{line}: {storage['shared_shards']} shared with v{storage['previous']} "
            f"({fmt_size(storage['shared_bytes'])}), {storage['new_shards']} new "
            f"({fmt_size(storage['new_bytes'])})")


def fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "-")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def to_json(data: Any, indent: int | None = 2) -> str:
    """The JSON text of ``--json`` outputs (and of the web page's JSON API)."""
    return json.dumps(data, indent=indent, default=_json_default, sort_keys=True)
