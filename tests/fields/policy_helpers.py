"""Blocks of a table typed by one policy, joined: what the Arrow-vs-Python reader tests
compare (tests/fields/test_arrow_tables.py, test_arrow_jsonl.py)."""

from __future__ import annotations

from typing import Any

import numpy as np

from datastack.formats._table_policy import TablePolicy


def typed(blocks: Any, options: Any, prefix: str, where: str) -> Any:
    """``(field dicts, {field: values}, encodings)``: every block through one policy, staged
    columns joined, then the final fields (text as lists, fixed fields as arrays)."""
    policy = TablePolicy(options, prefix)
    staged = [policy.convert(block, where) for block in blocks]
    fields, transforms, encodings = policy.finish()
    out: dict[str, Any] = {}
    for fld in fields:
        parts = [s[fld.name] for s in staged]
        if fld.variable:
            out[fld.name] = [v for p in parts for v in (p.to_pylist() if hasattr(p, "to_pylist")
                                                         else p)]
            continue
        joined = np.concatenate(parts)
        fn = transforms.get(fld.name)
        out[fld.name] = np.asarray(fn(joined) if fn else joined)
    return [f.to_dict() for f in fields], out, encodings
