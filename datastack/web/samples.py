"""Sample previews, read lazily from the published stream (filled in with the field model)."""

from __future__ import annotations

from typing import Any

from datastack.store import Store


class SampleCache:
    """Opened split iterators of immutable versions, shared by the preview requests."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def page_context(self, record: Any, split: str, page: int, size: int) -> dict[str, Any]:
        return {}

    def thumbnail(self, record: Any, split: str, index: int, field: str) -> bytes:
        raise NotImplementedError


__all__ = ["SampleCache"]
