"""The YAML dataset spec: parse and validate, with clear errors, before any download.

A spec file holds a ``datasets:`` mapping of dataset name -> definition (see ``docs/specs.md``).
Every problem raises :class:`~datastack.errors.SpecError` naming the file, the dataset, the key
and the reason; unknown keys get a "did you mean" suggestion.

>>> specs = load_spec('''
... datasets:
...   iris:
...     sources:
...       - url: https://example.org/iris.csv
...         md5: 0123456789abcdef0123456789abcdef
...     format: csv
...     csv: {target: species}
...     splits: {train: 0.8, test: 0.2}
... ''')
>>> specs["iris"].csv.target, specs["iris"].splits
('species', {'train': 0.8, 'test': 0.2})
>>> load_spec("datasets: {iris: {sources: [], formt: csv}}")
Traceback (most recent call last):
...
datastack.errors.SpecError: <string>: dataset 'iris': key 'formt': unknown key; did you mean ...
"""

from __future__ import annotations

import math
import os
import posixpath
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from datastack._checks import Checker
from datastack._cron import validate_cron
from datastack._uri import redact
from datastack.errors import InvalidIdentifierError, SpecError
from datastack.identifiers import validate_dataset_name, validate_identifier
from datastack.specs._storage import _compression, _shard_bytes
from datastack.specs.model import (
    DatasetSpec,
    Expectations,
    SourceSpec,
)

ROLES = ("samples", "targets")
SCHEMES = ("http", "https", "file")
_SPLIT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_IMPORT_PATH_RE = re.compile(rf"{_DOTTED}:{_DOTTED}\Z")

#: Deepest nesting and most values allowed in an ``extra:`` block.
MAX_EXTRA_DEPTH = 32
MAX_EXTRA_VALUES = 10_000

_TOP_KEYS = ("datasets",)
_DATASET_KEYS = (
    "description", "license", "sources", "format", "splits", "stratify", "seed", "key",
    "schedule", "preprocessor", "factory", "extra", "compression", "expect", "shard_bytes",
)
_SOURCE_KEYS = ("url", "sha256", "md5", "track", "role", "filename", "split", "member")
_EXPECT_KEYS = (
    "min_samples", "max_samples", "max_change", "classes", "max_missing", "schema_change",
    "new_classes",
)


# -- errors --------------------------------------------------------------------------------------
def _error(origin: str, dataset: str | None, key: str | None, reason: str) -> SpecError:
    parts = [origin]
    if dataset is not None:
        parts.append(f"dataset {dataset!r}")
    if key is not None:
        parts.append(f"key {key!r}")
    exc = SpecError(": ".join(parts) + f": {reason}")
    exc.origin, exc.dataset, exc.key = origin, dataset, key  # type: ignore[attr-defined]
    return exc


class _Ctx(Checker):
    """Where we are in the document (file, dataset), for error messages."""

    def __init__(self, origin: str, dataset: str | None = None, base_dir: Path | None = None):
        super().__init__(lambda key, reason: _error(origin, dataset, key, reason))
        self.origin = origin
        self.dataset = dataset
        self.base_dir = base_dir

    def check_keys(self, mapping: Mapping[str, Any], allowed: Sequence[str], prefix: str) -> None:
        self.child(prefix).keys(mapping, allowed)


def _mapping(ctx: _Ctx, value: Any, key: str) -> Mapping[str, Any]:
    return ctx.mapping(value, key)


def _bool(ctx: _Ctx, value: Any, key: str) -> bool:
    return ctx.boolean(value, key)


def _int(ctx: _Ctx, value: Any, key: str, minimum: int = 0) -> int:
    return ctx.integer(value, key, minimum)


def _str(ctx: _Ctx, value: Any, key: str) -> str:
    return ctx.string(value, key)


def _key(ctx: _Ctx, raw: Mapping[str, Any], custom: bool) -> tuple[str, ...] | None:
    """``key:`` (``docs/living.md``): the columns identifying a row across versions."""
    if raw.get("key") is not None and (raw.get("splits") is None or custom):
        raise ctx.fail("key", "it names the columns identifying a row across versions, for "
                              "splits: that never move; it needs splits: and a format:")
    return None if raw.get("key") is None else ctx.names(raw["key"], "key")


# -- sources -------------------------------------------------------------------------------------
def _hex(ctx: _Ctx, value: Any, key: str, length: int) -> str:
    if not isinstance(value, str) or len(value) != length or not re.fullmatch(
        r"[0-9a-fA-F]+", value
    ):
        got = f"{len(value)} characters" if isinstance(value, str) else type(value).__name__
        raise ctx.fail(key, f"expected {length} hex characters, got {got} ({value!r:.80})")
    return value.lower()


def _resolve_url(ctx: _Ctx, url: str, key: str) -> str:
    """Check the scheme; turn local paths and relative ``file:`` URLs into absolute file URLs."""
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in url) or not url.strip():
        raise ctx.fail(key, "URL is empty or contains control characters")
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if len(scheme) == 1 and os.name == "nt":  # pragma: no cover - drive letters
        scheme = ""
    if scheme and scheme not in SCHEMES:
        raise ctx.fail(
            key, f"unsupported URL scheme {scheme!r} in {redact(url)!r}; use http://, https:// or file://"
        )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ctx.fail(key, f"URL {redact(url)!r} has no host")
        return url
    if scheme == "file":
        if parts.netloc:
            raise ctx.fail(
                key,
                f"file URL {redact(url)!r} names a host ({parts.hostname!r}); use "
                "file:///absolute/path or a path relative to the spec file",
            )
        path = unquote(parts.path)
    else:
        path = url
    if not path:
        raise ctx.fail(key, f"file URL {url!r} has no path")
    local = Path(path)
    if not local.is_absolute():
        local = (ctx.base_dir or Path.cwd()) / local
    return Path(os.path.abspath(local)).as_uri()


def _source(ctx: _Ctx, raw: Any, index: int) -> SourceSpec:
    prefix = f"sources[{index}]."
    if isinstance(raw, str):
        raise ctx.fail(f"sources[{index}]", "expected a mapping with url and sha256 (or md5)")
    raw = _mapping(ctx, raw, f"sources[{index}]")
    ctx.check_keys(raw, _SOURCE_KEYS, prefix)
    if "url" not in raw:
        raise ctx.fail(prefix + "url", "missing; every source needs a url")
    url = _resolve_url(ctx, _str(ctx, raw["url"], prefix + "url"), prefix + "url")
    sha256 = raw.get("sha256")
    md5 = raw.get("md5")
    track = _bool(ctx, raw.get("track", False), prefix + "track")
    if track and (sha256 is not None or md5 is not None):
        raise ctx.fail(
            prefix + "track",
            "a source is either pinned (sha256:/md5:, content must match) or tracked "
            "(track: true, follows upstream); remove one of them",
        )
    if sha256 is None and md5 is None and not track:
        raise ctx.fail(
            prefix + "sha256",
            "missing checksum; give sha256: <64 hex> (or md5: <32 hex>) to pin the content, "
            "or track: true for a source that changes upstream",
        )
    sha256 = None if sha256 is None else _hex(ctx, sha256, prefix + "sha256", 64)
    md5 = None if md5 is None else _hex(ctx, md5, prefix + "md5", 32)
    role = raw.get("role")
    if role is not None and role not in ROLES:
        raise ctx.fail(prefix + "role", f"expected one of {', '.join(ROLES)}, got {role!r}")
    split = raw.get("split")
    if split is not None:
        split = _split_name(ctx, split, prefix + "split")
    default_name = posixpath.basename(unquote(urlsplit(url).path))
    if url.startswith("file:") and os.path.isdir(unquote(urlsplit(url).path)):
        default_name += ".tar"  # a folder source is copied as the tar of its files
    filename = _str(ctx, raw.get("filename", default_name), prefix + "filename")
    try:
        if "/" in filename:
            raise InvalidIdentifierError("must be a single path segment")
        validate_identifier(filename)
    except InvalidIdentifierError as exc:
        raise ctx.fail(
            prefix + "filename",
            f"{filename!r} is not a usable file name ({exc}); set filename: explicitly",
        ) from None
    member = raw.get("member")
    if member is not None:
        try:
            member = validate_identifier(_str(ctx, member, prefix + "member"))
        except InvalidIdentifierError as exc:
            raise ctx.fail(prefix + "member", str(exc)) from None
    return SourceSpec(url, sha256, md5, role, filename, split, member, track)


def _split_name(ctx: _Ctx, value: Any, key: str) -> str:
    if not isinstance(value, str) or not _SPLIT_NAME_RE.match(value) or len(value) > 64:
        raise ctx.fail(key, f"invalid split name {value!r}; use letters, digits, '_' or '-'")
    return value


# -- blocks --------------------------------------------------------------------------------------
def _splits(ctx: _Ctx, raw: Any) -> dict[str, float]:
    from datastack.errors import ConfigurationError
    from datastack.splits import check_ratios

    raw = _mapping(ctx, raw, "splits")
    if not raw:
        raise ctx.fail("splits", "expected at least one split, e.g. {train: 0.8, test: 0.2}")
    for name, ratio in raw.items():
        key = f"splits.{name}"
        _split_name(ctx, name, key)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(
            ratio
        ):
            raise ctx.fail(key, f"expected a number between 0 and 1, got {ratio!r}")
        if not 0 < ratio <= 1:
            raise ctx.fail(key, f"expected a ratio in (0, 1], got {ratio!r}")
    try:
        return check_ratios(raw)
    except ConfigurationError as exc:
        raise ctx.fail("splits", str(exc)) from None


def _fraction(ctx: _Ctx, value: Any, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
        math.isfinite(value) and value >= 0
    ):
        raise ctx.fail(key, f"expected a number >= 0, got {value!r:.80}")
    return float(value)


def _expect(ctx: _Ctx, raw: Any) -> Expectations | None:
    """The ``expect:`` block: gates a new version must pass before it is published."""
    if raw is None:
        return None
    block = _mapping(ctx, raw, "expect")
    ctx.check_keys(block, _EXPECT_KEYS, "expect.")

    def count(key: str) -> int | None:
        value = block.get(key)
        return None if value is None else _int(ctx, value, f"expect.{key}")

    def fraction(key: str) -> float | None:
        value = block.get(key)
        return None if value is None else _fraction(ctx, value, f"expect.{key}")

    classes = block.get("classes")
    if classes is not None and (
        not isinstance(classes, list)
        or not classes
        or not all(isinstance(c, (str, int)) and not isinstance(c, bool) for c in classes)
    ):
        raise ctx.fail("expect.classes", "expected a non-empty list of class labels")
    expectations = Expectations(
        min_samples=count("min_samples"),
        max_samples=count("max_samples"),
        max_change=fraction("max_change"),
        classes=None if classes is None else tuple(str(c) for c in classes),
        max_missing=fraction("max_missing"),
        schema_change=_bool(ctx, block.get("schema_change", False), "expect.schema_change"),
        new_classes=_bool(ctx, block.get("new_classes", True), "expect.new_classes"),
    )
    low, high = expectations.min_samples, expectations.max_samples
    if low is not None and high is not None and low > high:
        raise ctx.fail("expect", f"min_samples ({low}) is larger than max_samples ({high})")
    if expectations.max_missing is not None and expectations.max_missing > 1:
        raise ctx.fail("expect.max_missing", "expected a fraction between 0 and 1")
    return expectations


def _extra(ctx: _Ctx, raw: Any) -> dict[str, Any]:
    """The ``extra:`` block: plain data (strings as keys; strings, numbers, booleans, null,
    dates, lists and mappings as values), at most 32 levels deep, so that its fingerprint is
    canonical (a set, whose order changes from run to run, is refused)."""
    import datetime as dt

    count = 0

    def check(value: Any, where: str, depth: int) -> Any:
        nonlocal count
        count += 1
        if count > MAX_EXTRA_VALUES:
            raise ctx.fail("extra", f"more than {MAX_EXTRA_VALUES} values; keep extra: small")
        if depth > MAX_EXTRA_DEPTH:
            raise ctx.fail(where, f"nested deeper than {MAX_EXTRA_DEPTH} levels")
        if isinstance(value, Mapping):
            out = {}
            for key, item in value.items():
                if not isinstance(key, str):
                    shown = f"{type(key).__name__} {key!r:.40}"
                    raise ctx.fail(where, f"keys must be strings, got {shown}")
                out[key] = check(item, f"{where}.{key}", depth + 1)
            return out
        if isinstance(value, list):
            return [check(item, f"{where}[{i}]", depth + 1) for i, item in enumerate(value)]
        if isinstance(value, (dt.date, dt.datetime)):
            return value.isoformat()
        if value is None or isinstance(value, (str, bool, int, float)):
            return value
        raise ctx.fail(
            where,
            f"{type(value).__name__} values are not allowed (only strings, numbers, booleans, "
            "null, dates, lists and mappings: a fingerprint must not depend on ordering)",
        )

    checked: dict[str, Any] = check(_mapping(ctx, raw, "extra"), "extra", 0)
    return checked


def _import_path(ctx: _Ctx, raw: Mapping[str, Any], key: str) -> str | None:
    value = raw.get(key)
    if value is not None and (not isinstance(value, str) or not _IMPORT_PATH_RE.match(value)):
        raise ctx.fail(key, f"expected 'module.path:attr', got {value!r:.80}")
    return value


def _format(ctx: _Ctx, raw: Mapping[str, Any], custom: bool) -> tuple[str | None, Any]:
    """The ``format:`` name and its options block, validated by the format itself."""
    from datastack.formats import FORMATS

    known = ", ".join(FORMATS.names())
    fmt = raw.get("format")
    if fmt is None and not custom:
        raise ctx.fail("format", f"missing; expected one of {known}")
    if fmt is not None and (not isinstance(fmt, str) or fmt not in FORMATS):
        raise ctx.fail("format", f"unknown format {fmt!r:.80}; expected one of {known}")
    for name in FORMATS.names():  # a block of another format is a mistake
        key = FORMATS.get(name).options_key
        if key and key in raw and name != fmt:
            raise ctx.fail(
                key, f"this block is for format {name!r}, but the spec says format: {fmt}"
            )
    if fmt is None:
        return None, None
    handler = FORMATS.get(fmt)
    if handler.options_key is None or handler.options_key not in raw:
        return fmt, handler.default_options()
    block = _mapping(ctx, raw[handler.options_key], handler.options_key)
    return fmt, handler.parse_options(block, ctx.child(f"{handler.options_key}."))


def _sources(ctx: _Ctx, raw: Mapping[str, Any], fmt: str | None, custom: bool) -> tuple[
    SourceSpec, ...
]:
    raw_sources = raw.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ctx.fail("sources", "expected a non-empty list of {url, sha256|md5} mappings")
    sources = tuple(_source(ctx, s, i) for i, s in enumerate(raw_sources))
    names = [s.filename for s in sources]
    if len(set(names)) != len(names):
        raise ctx.fail("sources", f"two sources share a filename ({names}); set filename:")
    assigned = [s.split for s in sources if s.split is not None]
    if assigned and len(assigned) != len(sources):
        raise ctx.fail("sources", "either every source names its split or none does")
    if assigned and raw.get("splits") is not None:
        raise ctx.fail("splits", "sources already name their splits; remove splits: or split:")
    if fmt is not None and not custom:
        from datastack.formats import get_format

        get_format(fmt).check_sources(sources, ctx)
    return sources


def _schedule(ctx: _Ctx, raw: Mapping[str, Any]) -> str | None:
    schedule = raw.get("schedule")
    if schedule is not None:
        try:
            validate_cron(_str(ctx, schedule, "schedule"))
        except ValueError as exc:
            raise ctx.fail("schedule", f"invalid cron expression {schedule!r}: {exc}") from None
    return schedule


def _dataset(name: Any, raw: Any, origin: str, base_dir: Path | None) -> DatasetSpec:
    ctx = _Ctx(origin, str(name), base_dir)
    try:
        validate_dataset_name(name)
    except InvalidIdentifierError as exc:
        raise ctx.fail(None, f"invalid dataset name: {exc}") from None
    if raw is None:
        raise ctx.fail("sources", "missing; the dataset needs sources")
    raw = _mapping(ctx, raw, "(definition)")
    from datastack.formats import FORMATS

    blocks = [k for n in FORMATS.names() if (k := FORMATS.get(n).options_key)]
    ctx.check_keys(raw, (*_DATASET_KEYS, *blocks), "")
    preprocessor = _import_path(ctx, raw, "preprocessor")
    factory = _import_path(ctx, raw, "factory")
    if preprocessor is not None and factory is not None:
        raise ctx.fail("factory", "give either factory: or preprocessor:, not both")
    custom = preprocessor is not None or factory is not None
    fmt, options = _format(ctx, raw, custom)
    sources = _sources(ctx, raw, fmt, custom)
    splits = None if raw.get("splits") is None else _splits(ctx, raw["splits"])
    stratify = _bool(ctx, raw.get("stratify", False), "stratify")
    if stratify and splits is None:
        raise ctx.fail("stratify", "stratify: true needs splits:")
    description = raw.get("description", "")
    return DatasetSpec(
        name=name,
        sources=sources,
        format=fmt,
        description=_str(ctx, description if description is not None else "", "description"),
        license=_str(ctx, raw.get("license") or "", "license"),
        options=options,
        splits=splits,
        stratify=stratify,
        seed=_int(ctx, raw.get("seed", 0), "seed"),
        key=_key(ctx, raw, custom),
        schedule=_schedule(ctx, raw),
        preprocessor=preprocessor,
        factory=factory,
        extra=_extra(ctx, raw.get("extra", {})),
        origin=origin,
        compression=_compression(ctx, raw),
        shard_bytes=_shard_bytes(ctx, raw),
        expect=_expect(ctx, raw.get("expect")),
    )


def parse_spec(
    mapping: Any, source_name: str = "<string>", base_dir: str | os.PathLike[str] | None = None
) -> dict[str, DatasetSpec]:
    """Validate a loaded spec document (``{"datasets": {...}}``) into :class:`DatasetSpec` s.

    ``source_name`` is shown in error messages; relative local paths resolve against
    ``base_dir`` (default: the current directory).

    >>> parse_spec({"datasets": {}})
    {}
    """
    ctx = _Ctx(source_name, None, Path(base_dir) if base_dir is not None else None)
    if not isinstance(mapping, Mapping):
        raise ctx.fail(
            None, f"expected a mapping with a 'datasets:' key, got {type(mapping).__name__}"
        )
    ctx.check_keys(mapping, _TOP_KEYS, "")
    datasets = mapping.get("datasets")
    if datasets is None:
        raise ctx.fail("datasets", "missing; the spec needs a 'datasets:' mapping")
    datasets = _mapping(ctx, datasets, "datasets")
    return {
        str(name): _dataset(name, raw, source_name, ctx.base_dir) for name, raw in datasets.items()
    }


def select_specs(
    specs: Mapping[str, DatasetSpec], names: Sequence[str] | None, origin: str = "the spec"
) -> list[DatasetSpec]:
    """The datasets ``names`` of ``specs`` (all when ``names`` is empty), in that order.

    The one check that requested names exist: an unknown name is a :class:`SpecError`
    listing what the spec defines.
    """
    if not names:
        return list(specs.values())
    unknown = [n for n in names if n not in specs]
    if unknown:
        raise SpecError(
            f"{origin}: no dataset named {', '.join(map(repr, unknown))}; the spec defines "
            f"{', '.join(sorted(specs)) or 'nothing'}"
        )
    return [specs[n] for n in dict.fromkeys(names)]


__all__ = ["parse_spec", "select_specs"]
