"""The validated dataset spec: :class:`SourceSpec` and :class:`DatasetSpec` (plain data).

Built by :func:`datastack.specs.parse_spec` / :func:`datastack.specs.load_spec`; see
``docs/specs.md`` for every key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from datastack.canonical.layout import COMPRESSIONS, DEFAULT_COMPRESSION


@dataclass(frozen=True)
class SourceSpec:
    """One raw source of a dataset.

    ``filename`` defaults to the last segment of the URL path; gzip (``.gz``) and archives
    (``.tar``, ``.tar.gz``, ``.tgz``, ``.zip``) are detected from it. ``split`` assigns the source
    to a predefined split (MNIST's train/test files); ``member`` picks one file in an archive.
    """

    url: str
    sha256: str | None = None
    md5: str | None = None
    role: str | None = None
    filename: str = ""
    split: str | None = None
    member: str | None = None
    #: Tracked (``track: true``): no checksum, follows upstream; each refresh asks whether it
    #: changed (conditional request, else download and compare the sha256).
    track: bool = False

    @property
    def pinned(self) -> bool:
        """Whether a checksum pins the content (the opposite of :attr:`track`)."""
        return not self.track

    @property
    def checksum(self) -> tuple[str, str]:
        """``("sha256", hex)`` when a sha256 is given, else ``("md5", hex)`` (empty when
        tracked: the content is known only once downloaded)."""
        if self.sha256:
            return ("sha256", self.sha256)
        return ("md5", self.md5 or "")

    @property
    def compression(self) -> str | None:
        """``"tar"``, ``"zip"``, ``"gzip"`` or ``None``, from the filename suffix."""
        name = self.filename.lower()
        if name.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
            return "tar"
        if name.endswith(".zip"):
            return "zip"
        if name.endswith(".gz"):
            return "gzip"
        return None


@dataclass(frozen=True)
class Expectations:
    """The ``expect:`` block: gates a new version must pass before it becomes the latest.

    Sample counts are totals over all splits; ``max_change`` is the largest allowed relative
    change of that total against the previous version (0.5: +-50 %); ``classes`` the allowed
    target classes; ``new_classes`` (default true) whether a label may gain a class its
    previous version did not have; ``max_missing`` the largest allowed fraction of missing
    feature values; ``schema_change`` lets a tracked dataset change its columns, dtypes or
    sample shapes.
    """

    min_samples: int | None = None
    max_samples: int | None = None
    max_change: float | None = None
    classes: tuple[str, ...] | None = None
    max_missing: float | None = None
    schema_change: bool = False
    new_classes: bool = True


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset definition. See ``docs/specs.md``.

    ``options`` holds the options of the spec's format (its block, e.g. ``csv:``), parsed by
    that format (:mod:`datastack.formats`); ``spec.csv`` / ``spec.hdf5`` / ``spec.npz`` (any
    format's block name) read them too, giving that format's defaults when the spec declares
    another format.
    """

    name: str
    sources: tuple[SourceSpec, ...]
    format: str | None = None
    description: str = ""
    #: The data's license (an SPDX id such as ``CC-BY-4.0``, or a URL): shown in the Croissant
    #: metadata; like ``description``, not part of the fingerprint.
    license: str = ""
    options: Any = None
    splits: dict[str, float] | None = None
    stratify: bool = False
    seed: int = 0
    #: Columns identifying a row across versions (stable splits); ``None``: its content.
    key: tuple[str, ...] | None = None
    schedule: str | None = None
    preprocessor: str | None = None
    factory: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str = "<string>"
    compression: str = DEFAULT_COMPRESSION
    expect: Expectations | None = None
    #: The most bytes of one shard of a version (``docs/living.md``); ``None``: the
    #: ``DATASTACK_SHARD_BYTES`` setting or the default. Not part of the fingerprint: it
    #: changes how a version is stored, not its samples.
    shard_bytes: int | None = None

    @property
    def tracked(self) -> bool:
        """Whether any source is tracked (follows upstream instead of pinning a checksum)."""
        return any(s.track for s in self.sources)

    def __getattr__(self, key: str) -> Any:
        # A format's spec block by its name (``spec.csv``): only called for unknown attributes.
        if key.startswith("_"):
            raise AttributeError(key)
        from datastack.formats import FORMATS

        for name in FORMATS.names():
            fmt = FORMATS.get(name)
            if fmt.options_key == key:
                return self.options if self.format == name else fmt.default_options()
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {key!r}")

    def fingerprint(self) -> str:
        """Stable sha256 over everything that shapes the prepared data.

        URLs, ``description``, ``license``, ``schedule``, ``origin`` and ``expect`` are left
        out: moving a file or a mirror with the same checksum, or changing the cron or the
        gates, does not make the data different. A source's ``track`` counts only when true.
        ``compression`` counts only when it is not the default, ``factory`` and ``key`` only
        when set, so specs written before those keys existed keep their fingerprint.
        """
        payload: dict[str, Any] = {
            "name": self.name,
            "sources": [
                {
                    k: v
                    for k, v in dataclasses.asdict(s).items()
                    if k != "url" and not (k == "track" and not v)
                }
                for s in self.sources
            ],
            "format": self.format,
            "splits": self.splits,
            "stratify": self.stratify,
            "seed": self.seed,
            "preprocessor": self.preprocessor,
            "extra": self.extra,
        }
        if self.compression != DEFAULT_COMPRESSION:
            payload["compression"] = self.compression
        if self.factory is not None:
            payload["factory"] = self.factory
        if self.key is not None:
            payload["key"] = list(self.key)
        if self.format is not None:
            from datastack.formats import get_format

            fmt = get_format(self.format)
            options = fmt.options_dict(self.options)
            if fmt.options_key is not None and options is not None:
                payload[fmt.options_key] = options
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def replace(self, **changes: Any) -> DatasetSpec:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


__all__ = ["COMPRESSIONS", "DEFAULT_COMPRESSION", "DatasetSpec", "Expectations", "SourceSpec"]
