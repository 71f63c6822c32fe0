"""The spec keys that say how a version is stored, not what it holds: ``compression:`` and
``shard_bytes:`` (neither is part of the fingerprint unless set away from the default)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from datastack.canonical.layout import COMPRESSIONS, DEFAULT_COMPRESSION

if TYPE_CHECKING:  # pragma: no cover
    from datastack.specs._parse import _Ctx


def _compression(ctx: _Ctx, raw: Mapping[str, Any]) -> str:
    compression = raw.get("compression", DEFAULT_COMPRESSION)
    if not isinstance(compression, str) or compression not in COMPRESSIONS:
        shown = "null" if compression is None else repr(compression)
        raise ctx.fail(
            "compression",
            f"expected one of {', '.join(COMPRESSIONS)}, got {shown}; 'none' (the default) "
            "reads fastest, 'lzf' or 'gzip' make the stored file smaller",
        )
    return compression


def _shard_bytes(ctx: _Ctx, raw: Mapping[str, Any]) -> int | None:
    """``shard_bytes:`` (``docs/living.md``): an int or a size such as ``256M``."""
    from datastack.canonical.shards import parse_shard_bytes

    try:
        return parse_shard_bytes(raw.get("shard_bytes"))
    except ValueError as exc:
        raise ctx.fail("shard_bytes", str(exc)) from None
