"""Sample previews, read lazily from the published stream: one page of samples, thumbnails,
class histograms.

- A preview page reads only the samples it shows (``get_samples`` of that range: one batch,
  one round trip over GridFS), and none of their images when the other fields are labels
  (labels are read eagerly with the split): each image is its own thumbnail request.
- A thumbnail (:meth:`SampleCache.thumbnail`) reads one sample with images left encoded and
  draws it with :func:`datastack.preview.thumbnail`, the renderer ``datastack show
  --preview`` uses too (bounded: images refused over its pixel limit before decoding, JPEGs
  decoded at a reduced scale, arrays subsampled in place). Versions are immutable, so
  thumbnails and histograms are cached (bounded).
- Fixed-shape numeric fields shaped like pictures (``H x W`` or ``H x W x 1|3|4``: MNIST,
  CIFAR) are shown as images too (:func:`datastack.preview.picture_like`).

Open split iterators are kept per (dataset, version, split), a few at a time, each behind a
lock: the routes run in worker threads and one stream is not safe for concurrent seeks.
"""

from __future__ import annotations

import atexit
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote, urlencode

import numpy as np

from datastack.errors import DatastackError, StorageUnavailableError
from datastack.fields import LABEL, Field
from datastack.preview import (
    category_names,
    column_names,
    field_cells,
    picture_like,
    render_thumbnail,
    shown_as_image,
    shown_fields,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.iterators.base import DatasetIterator
    from datastack.store import Store

#: Bars of a class histogram (the most frequent classes beyond are counted, not drawn).
MAX_BARS = 40
#: Open split iterators kept; bytes of cached thumbnails.
MAX_OPEN = 8
MAX_THUMB_CACHE_BYTES = 32 * 1024 * 1024

Key = tuple[str, int, str]
T = TypeVar("T")



def _cells(record: VersionRecord, split: str, index: int, fields: list[Field],
           row: Any, categories: dict[str, Any]) -> list[dict[str, Any]]:
    """The cells of one sample: a thumbnail URL per image field, text for the others (the
    cells :func:`datastack.preview.field_cells` gives ``show --preview`` too)."""
    cells: list[dict[str, Any]] = []
    for pos, fld in enumerate(fields):
        if shown_as_image(fld):
            src = thumbnail_url(record, split, index, fld.name)
            cells.append({"field": fld.name, "src": src, "alt": f"{fld.name} {index}"})
        else:
            cells += [{"field": column, "src": "", "text": text}
                      for column, text in field_cells(fld, row[pos], categories)]
    return cells


def _scattered_reads(store: Store) -> Store:
    """The store previews read through: a page reads a few scattered samples, so sequential
    read-ahead (GridFS) would not serve it (nor would filling the local disk cache with the
    whole file: iterators are opened with ``ReadDecision(fill_cache=False)``)."""
    import copy

    try:
        clone = copy.copy(store)
        if getattr(store.storage, "readahead_bytes", 0):
            clone.storage = copy.copy(store.storage)
            clone.storage.readahead_bytes = 0  # type: ignore[attr-defined]
    except TypeError:  # built on a Database object (tests): read as it is
        return store
    return clone


class SampleCache:
    """Opened split iterators of immutable versions, thumbnails and histograms (bounded)."""

    def __init__(self, store: Store) -> None:
        self.store = _scattered_reads(store)
        self._lock = threading.Lock()
        self._open: OrderedDict[Key, tuple[DatasetIterator, threading.Lock]] = OrderedDict()
        self._thumbs: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self._thumb_bytes = 0
        self._histograms: OrderedDict[Key, list[dict[str, Any]]] = OrderedDict()
        # h5py files left open at interpreter exit can crash it (finalisation calls back into
        # Python file objects): close them before, also when the server stops without a
        # lifespan shutdown.
        atexit.register(_close_cache, weakref.ref(self))

    def close(self) -> None:
        """Close every open split iterator (they reopen lazily if used again)."""
        with self._lock:
            opened, self._open = list(self._open.values()), OrderedDict()
        for it, lock in opened:
            with lock:
                it.close()

    # -- iterators --------------------------------------------------------------------------
    def _iterator(self, record: VersionRecord, split: str) -> tuple[DatasetIterator, Any]:
        """The split's iterator (images left encoded: thumbnails decode them), opened lazily."""
        from datastack.factory import DatasetFactory
        from datastack.offline import ReadDecision

        key = (record.name, record.version, split)
        evicted = []
        with self._lock:
            if key in self._open:
                self._open.move_to_end(key)
                return self._open[key]
            read = ReadDecision(record, fill_cache=False)  # a few samples: fill nothing
            it = DatasetFactory().iterators(record, self.store, read=read)[split]
            opened = (it.with_image_options(decode=False), threading.Lock())
            self._open[key] = opened
            while len(self._open) > MAX_OPEN:
                evicted.append(self._open.popitem(last=False)[1])
        for old, lock in evicted:  # outside the cache lock: a reader may hold ``lock``
            with lock:
                old.close()
        return opened

    def _with(self, record: VersionRecord, split: str, read: Callable[[Any], T]) -> T:
        it, lock = self._iterator(record, split)
        with lock:
            return read(it)

    # -- a page of samples ------------------------------------------------------------------
    def page_context(
        self, record: VersionRecord, split: str, page: int, size: int,
        link: Callable[[str, int], str],
    ) -> dict[str, Any]:
        """``preview`` (one page of samples of ``split``) and ``histograms`` for the page; a
        version that cannot be read gives ``preview_error`` instead (the rest still shows)."""
        try:
            return self._with(record, split, lambda it: self._page(it, record, split, page,
                                                                   size, link))
        except StorageUnavailableError:
            raise
        except DatastackError as exc:
            return {"preview_error": f"the samples cannot be shown: {exc}"}

    def _page(self, it: DatasetIterator, record: VersionRecord, split: str, page: int,
              size: int, link: Callable[[str, int], str]) -> dict[str, Any]:
        fields = shown_fields(it, record)
        total = len(it)
        lo, hi = min(total, (page - 1) * size), min(total, page * size)
        rows = self._read_rows(it, fields, lo, hi)
        images = any(shown_as_image(f) for f in fields)
        categories = category_names(record)  # once a page, not once a sample
        samples = [
            {"index": lo + k, "cells": _cells(record, split, lo + k, fields, row, categories)}
            for k, row in enumerate(rows)
        ]
        preview = {
            "split": split, "splits": list(record.splits), "page": page, "size": size,
            "pages": max(1, -(-total // size)), "total": total, "first": lo,
            "last": max(lo, hi - 1),
            "columns": [c for f in fields for c in column_names(f)], "samples": samples,
            "grid": images,
            "link": link,
        }
        return {"preview": preview, "histograms": self._histograms_of(it, record, split, fields)}

    @staticmethod
    def _read_rows(it: DatasetIterator, fields: list[Field], lo: int, hi: int) -> list[Any]:
        """Samples ``lo..hi-1``; image fields are not read when every other field is a label
        (labels come from the split's eagerly read column)."""
        if hi <= lo:
            return []
        if any(shown_as_image(f) for f in fields) and all(
            shown_as_image(f) or f.kind == LABEL for f in fields
        ):
            columns = [None if shown_as_image(f) else it.get_targets(pos)[lo:hi]
                       for pos, f in enumerate(fields)]
            return [tuple(None if c is None else c[k] for c in columns) for k in range(hi - lo)]
        return it.get_samples(range(lo, hi))  # images (if any) stay encoded: not decoded here

    # -- histograms -------------------------------------------------------------------------
    def _histograms_of(self, it: DatasetIterator, record: VersionRecord, split: str,
                       fields: list[Field]) -> list[dict[str, Any]]:
        key = (record.name, record.version, split)
        with self._lock:
            if key in self._histograms:
                return self._histograms[key]
        out = []
        for pos, fld in enumerate(fields):
            if fld.kind == LABEL and fld.names:
                codes = np.asarray(it.get_targets(pos)).astype(np.int64, copy=False)
                out.append(histogram(fld.name, split, fld.names, codes))
        with self._lock:
            self._histograms[key] = out
            while len(self._histograms) > 64:
                self._histograms.popitem(last=False)
        return out

    # -- thumbnails -------------------------------------------------------------------------
    def thumbnail(self, record: VersionRecord, split: str, index: int, field: str) -> bytes:
        """The PNG thumbnail of field ``field`` (default: the first image field) of sample
        ``index``; 404 style NotFoundError for a field that is not an image."""
        key = (record.name, record.version, split, index, field)
        with self._lock:
            if key in self._thumbs:
                self._thumbs.move_to_end(key)
                return self._thumbs[key]
        png: bytes = self._with(
            record, split, lambda it: self._render(it, record, split, index, field)
        )
        with self._lock:
            self._thumbs[key] = png
            self._thumb_bytes += len(png)
            while self._thumb_bytes > MAX_THUMB_CACHE_BYTES and self._thumbs:
                _, old = self._thumbs.popitem(last=False)
                self._thumb_bytes -= len(old)
        return png

    def _render(self, it: DatasetIterator, record: VersionRecord, split: str, index: int,
                field: str) -> bytes:
        from datastack.errors import NotFoundError

        fields = shown_fields(it, record)
        images = [i for i, f in enumerate(fields) if shown_as_image(f)]
        pos = next((i for i in images if fields[i].name == field), None) if field else (
            images[0] if images else None)
        if pos is None:
            shown = ", ".join(fields[i].name for i in images) or "none"
            raise NotFoundError(f"{record.name} v{record.version} has no image field "
                                f"{field[:80]!r}; image fields: {shown}")
        value = it[index][pos]  # an image field comes encoded (the iterator does not decode)
        return render_thumbnail(value, f"{record.name} v{record.version} {split} sample "
                                       f"{index} field {fields[pos].name!r}")


def _close_cache(ref: weakref.ref[SampleCache]) -> None:
    cache = ref()
    if cache is not None:
        cache.close()


def histogram(field: str, split: str, names: tuple[str, ...], codes: np.ndarray[Any, Any]
              ) -> dict[str, Any]:
    """Bars of a class histogram (for an inline SVG): the classes in order when few, else the
    :data:`MAX_BARS` most frequent."""
    valid = codes[(codes >= 0) & (codes < len(names))]
    counts = np.bincount(valid, minlength=len(names))
    order = list(range(len(names)))
    if len(names) > MAX_BARS:
        order = sorted(order, key=lambda i: -int(counts[i]))[:MAX_BARS]
    peak = max(1, max((int(counts[i]) for i in order), default=1))
    label_width = min(220, 12 + 7 * max((len(str(names[i])[:30]) for i in order), default=4))
    bars = [{"label": str(names[i])[:30], "count": int(counts[i]), "y": 20 * k,
             "width": max(1, round(360 * int(counts[i]) / peak)) if counts[i] else 0}
            for k, i in enumerate(order)]
    return {"field": field, "split": split, "total": int(codes.size), "counted": int(valid.size),
            "truncated": False, "bars": bars, "more": len(names) - len(order),
            "label_width": label_width, "width": label_width + 430, "height": 20 * len(bars) + 4}


def thumbnail_url(record: VersionRecord, split: str, index: int, field: str) -> str:
    """The URL of one thumbnail (every part URL-encoded)."""
    return (f"/thumbs/{quote(record.name)}/{record.version}/{quote(split, safe='')}/{index}.png"
            f"?{urlencode({'field': field})}")


__all__ = ["SampleCache", "histogram", "picture_like", "render_thumbnail", "thumbnail_url"]
