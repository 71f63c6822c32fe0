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

import difflib
import hashlib
import json
import math
import os
import posixpath
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from datastack._cron import validate_cron
from datastack.errors import InvalidIdentifierError, SpecError
from datastack.identifiers import validate_dataset_name, validate_identifier

FORMATS = ("csv", "npy", "npz", "hdf5", "idx")
ROLES = ("samples", "targets")
SCHEMES = ("http", "https", "file")
SPLIT_SUM_TOLERANCE = 1e-6
#: Storage compression of the canonical HDF5 file (key ``compression:``); ``none`` by default.
COMPRESSIONS = ("none", "lzf", "gzip")
DEFAULT_COMPRESSION = "none"
_SPLIT_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]*\Z")
_DOTTED = r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*"
_PREPROCESSOR_RE = re.compile(rf"{_DOTTED}:{_DOTTED}\Z")

_TOP_KEYS = ("datasets",)
_DATASET_KEYS = (
    "description", "sources", "format", "csv", "hdf5", "npz", "splits", "stratify", "seed",
    "schedule", "preprocessor", "extra", "compression",
)
_SOURCE_KEYS = ("url", "sha256", "md5", "role", "filename", "split", "member")
_CSV_KEYS = ("header", "skip_rows", "target", "delimiter", "categorical", "missing", "encoding")
_ARRAY_KEYS = ("samples", "targets")
DEFAULT_MISSING = ("", "NA", "N/A", "NaN", "nan", "null", "NULL", "?")


# -- dataclasses ---------------------------------------------------------------------------------
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

    @property
    def checksum(self) -> tuple[str, str]:
        """``("sha256", hex)`` when a sha256 is given, else ``("md5", hex)``."""
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
class CsvOptions:
    """Options of the ``csv:`` block (all optional)."""

    header: bool = True
    skip_rows: int = 0
    target: str | int | None = None
    delimiter: str = ","
    categorical: tuple[str | int, ...] = ()
    missing: tuple[str, ...] = DEFAULT_MISSING
    encoding: str = "utf-8"


@dataclass(frozen=True)
class ArrayNames:
    """Names of the samples/targets arrays inside an HDF5 or NPZ file."""

    samples: str = "samples"
    targets: str | None = "targets"


@dataclass(frozen=True)
class DatasetSpec:
    """A validated dataset definition. See ``docs/specs.md``."""

    name: str
    sources: tuple[SourceSpec, ...]
    format: str | None = None
    description: str = ""
    csv: CsvOptions = field(default_factory=CsvOptions)
    hdf5: ArrayNames = field(default_factory=ArrayNames)
    npz: ArrayNames = field(default_factory=ArrayNames)
    splits: dict[str, float] | None = None
    stratify: bool = False
    seed: int = 0
    schedule: str | None = None
    preprocessor: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    origin: str = "<string>"
    compression: str = DEFAULT_COMPRESSION

    def fingerprint(self) -> str:
        """Stable sha256 over everything that shapes the prepared data.

        URLs, ``description``, ``schedule`` and ``origin`` are left out: moving a file or a mirror
        with the same checksum, or changing the cron, does not make the data different.
        ``compression`` counts only when it is not the default, so specs written before the key
        existed keep their fingerprint.

        >>> a = load_spec("datasets: {x: {sources: [{url: 'https://a/x.csv', md5: " + repr("0" * 32)
        ...               + "}], format: csv}}")["x"]
        >>> len(a.fingerprint())
        64
        """
        payload = asdict(self)
        for key in ("description", "schedule", "origin"):
            payload.pop(key)
        if self.compression == DEFAULT_COMPRESSION:
            payload.pop("compression")
        for source in payload["sources"]:
            source.pop("url")
        if self.format != "csv":
            payload.pop("csv")
        if self.format != "hdf5":
            payload.pop("hdf5")
        if self.format != "npz":
            payload.pop("npz")
        text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


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


class _Ctx:
    """Where we are in the document, for error messages."""

    def __init__(self, origin: str, dataset: str | None = None, base_dir: Path | None = None):
        self.origin = origin
        self.dataset = dataset
        self.base_dir = base_dir

    def fail(self, key: str | None, reason: str) -> SpecError:
        return _error(self.origin, self.dataset, key, reason)

    def check_keys(self, mapping: Mapping[str, Any], allowed: tuple[str, ...], prefix: str) -> None:
        for key in mapping:
            if not isinstance(key, str):
                raise self.fail(f"{prefix}{key!r}", "keys must be strings")
            if key not in allowed:
                close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
                hint = f"did you mean {close[0]!r}? " if close else ""
                raise self.fail(
                    prefix + key, f"unknown key; {hint}allowed keys: {', '.join(allowed)}"
                )


def _mapping(ctx: _Ctx, value: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ctx.fail(key, f"expected a mapping, got {type(value).__name__}")
    return value


def _bool(ctx: _Ctx, value: Any, key: str) -> bool:
    if not isinstance(value, bool):
        raise ctx.fail(key, f"expected true or false, got {value!r}")
    return value


def _int(ctx: _Ctx, value: Any, key: str, minimum: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ctx.fail(key, f"expected an integer >= {minimum}, got {value!r}")
    return value


def _str(ctx: _Ctx, value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise ctx.fail(key, f"expected a string, got {type(value).__name__} {value!r}")
    return value


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
            key, f"unsupported URL scheme {scheme!r} in {url!r}; use http://, https:// or file://"
        )
    if scheme in ("http", "https"):
        if not parts.hostname:
            raise ctx.fail(key, f"URL {url!r} has no host")
        return url
    if scheme == "file":
        if parts.netloc:
            raise ctx.fail(
                key,
                f"file URL {url!r} names a host ({parts.netloc!r}); use file:///absolute/path "
                "or a path relative to the spec file",
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
    if sha256 is None and md5 is None:
        raise ctx.fail(
            prefix + "sha256", "missing checksum; give sha256: <64 hex> (or md5: <32 hex>)"
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
    return SourceSpec(url, sha256, md5, role, filename, split, member)


def _split_name(ctx: _Ctx, value: Any, key: str) -> str:
    if not isinstance(value, str) or not _SPLIT_NAME_RE.match(value) or len(value) > 64:
        raise ctx.fail(key, f"invalid split name {value!r}; use letters, digits, '_' or '-'")
    return value


# -- blocks --------------------------------------------------------------------------------------
def _csv_options(ctx: _Ctx, raw: Any) -> CsvOptions:
    raw = _mapping(ctx, raw, "csv")
    ctx.check_keys(raw, _CSV_KEYS, "csv.")
    header = _bool(ctx, raw.get("header", True), "csv.header")
    skip_rows = _int(ctx, raw.get("skip_rows", 0), "csv.skip_rows")
    target = raw.get("target")
    if target is not None and (isinstance(target, bool) or not isinstance(target, (str, int))):
        raise ctx.fail("csv.target", f"expected a column name or index, got {target!r}")
    if isinstance(target, str) and not header:
        raise ctx.fail(
            "csv.target", f"target {target!r} is a name but header is false; use an index"
        )
    delimiter = _str(ctx, raw.get("delimiter", ","), "csv.delimiter")
    if len(delimiter) != 1 or delimiter in "\r\n\"" or delimiter.isalnum():
        raise ctx.fail("csv.delimiter", f"expected one separator character, got {delimiter!r}")
    categorical = raw.get("categorical", [])
    if not isinstance(categorical, list) or any(
        isinstance(c, bool) or not isinstance(c, (str, int)) for c in categorical
    ):
        raise ctx.fail("csv.categorical", "expected a list of column names or indices")
    missing = raw.get("missing", list(DEFAULT_MISSING))
    if not isinstance(missing, list) or not all(isinstance(m, str) for m in missing):
        raise ctx.fail("csv.missing", "expected a list of strings that mean 'missing'")
    encoding = _str(ctx, raw.get("encoding", "utf-8"), "csv.encoding")
    try:
        "".encode(encoding)
    except LookupError:
        raise ctx.fail("csv.encoding", f"unknown text encoding {encoding!r}") from None
    return CsvOptions(
        header, skip_rows, target, delimiter, tuple(categorical), tuple(missing), encoding
    )


def _array_names(ctx: _Ctx, raw: Any, key: str) -> ArrayNames:
    raw = _mapping(ctx, raw, key)
    ctx.check_keys(raw, _ARRAY_KEYS, key + ".")
    samples = _str(ctx, raw.get("samples", "samples"), key + ".samples")
    targets = raw.get("targets", "targets")
    if targets is not None:
        targets = _str(ctx, targets, key + ".targets")
    return ArrayNames(samples, targets)


def _splits(ctx: _Ctx, raw: Any) -> dict[str, float]:
    raw = _mapping(ctx, raw, "splits")
    if not raw:
        raise ctx.fail("splits", "expected at least one split, e.g. {train: 0.8, test: 0.2}")
    out: dict[str, float] = {}
    for name, ratio in raw.items():
        key = f"splits.{name}"
        _split_name(ctx, name, key)
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not math.isfinite(
            ratio
        ):
            raise ctx.fail(key, f"expected a number between 0 and 1, got {ratio!r}")
        if not 0 < ratio <= 1:
            raise ctx.fail(key, f"expected a ratio in (0, 1], got {ratio!r}")
        out[name] = float(ratio)
    total = sum(out.values())
    if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
        raise ctx.fail("splits", f"ratios must sum to 1, got {total:g}")
    return out


def _dataset(name: Any, raw: Any, origin: str, base_dir: Path | None) -> DatasetSpec:
    ctx = _Ctx(origin, str(name), base_dir)
    try:
        validate_dataset_name(name)
    except InvalidIdentifierError as exc:
        raise ctx.fail(None, f"invalid dataset name: {exc}") from None
    if raw is None:
        raise ctx.fail("sources", "missing; the dataset needs sources")
    raw = _mapping(ctx, raw, "(definition)")
    ctx.check_keys(raw, _DATASET_KEYS, "")
    preprocessor = raw.get("preprocessor")
    if preprocessor is not None and (
        not isinstance(preprocessor, str) or not _PREPROCESSOR_RE.match(preprocessor)
    ):
        raise ctx.fail("preprocessor", f"expected 'module.path:attr', got {preprocessor!r}")
    fmt = raw.get("format")
    if fmt is None and preprocessor is None:
        raise ctx.fail("format", f"missing; expected one of {', '.join(FORMATS)}")
    if fmt is not None and fmt not in FORMATS:
        raise ctx.fail("format", f"unknown format {fmt!r}; expected one of {', '.join(FORMATS)}")
    raw_sources = raw.get("sources")
    if not isinstance(raw_sources, list) or not raw_sources:
        raise ctx.fail("sources", "expected a non-empty list of {url, sha256|md5} mappings")
    sources = tuple(_source(ctx, s, i) for i, s in enumerate(raw_sources))
    names = [s.filename for s in sources]
    if len(set(names)) != len(names):
        raise ctx.fail("sources", f"two sources share a filename ({names}); set filename:")
    splits = None if raw.get("splits") is None else _splits(ctx, raw["splits"])
    assigned = [s.split for s in sources if s.split is not None]
    if assigned and len(assigned) != len(sources):
        raise ctx.fail("sources", "either every source names its split or none does")
    if assigned and splits is not None:
        raise ctx.fail("splits", "sources already name their splits; remove splits: or split:")
    if fmt == "npy" and preprocessor is None:
        groups: dict[str | None, list[str | None]] = {}
        for s in sources:
            groups.setdefault(s.split, []).append(s.role)
        for group, roles in groups.items():
            if sorted(r or "" for r in roles) not in (["samples"], ["samples", "targets"]):
                where = f" of split {group!r}" if group else ""
                raise ctx.fail(
                    "sources",
                    f"npy sources{where} need role: samples (and optionally one role: targets), "
                    f"got roles {roles}",
                )
    stratify = _bool(ctx, raw.get("stratify", False), "stratify")
    if stratify and splits is None:
        raise ctx.fail("stratify", "stratify: true needs splits:")
    seed = _int(ctx, raw.get("seed", 0), "seed")
    schedule = raw.get("schedule")
    if schedule is not None:
        try:
            validate_cron(_str(ctx, schedule, "schedule"))
        except ValueError as exc:
            raise ctx.fail("schedule", f"invalid cron expression {schedule!r}: {exc}") from None
    extra = dict(_mapping(ctx, raw.get("extra", {}), "extra"))
    compression = raw.get("compression", DEFAULT_COMPRESSION)
    if not isinstance(compression, str) or compression not in COMPRESSIONS:
        shown = "null" if compression is None else repr(compression)
        raise ctx.fail(
            "compression",
            f"expected one of {', '.join(COMPRESSIONS)}, got {shown}; 'none' (the default) "
            "reads fastest, 'lzf' or 'gzip' make the stored file smaller",
        )
    description = raw.get("description", "")
    return DatasetSpec(
        name=name,
        sources=sources,
        format=fmt,
        description=_str(ctx, description if description is not None else "", "description"),
        csv=_csv_options(ctx, raw.get("csv", {})),
        hdf5=_array_names(ctx, raw.get("hdf5", {}), "hdf5"),
        npz=_array_names(ctx, raw.get("npz", {}), "npz"),
        splits=splits,
        stratify=stratify,
        seed=seed,
        schedule=schedule,
        preprocessor=preprocessor,
        extra=extra,
        origin=origin,
        compression=compression,
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


def load_spec(path_or_text: str | os.PathLike[str]) -> dict[str, DatasetSpec]:
    """Load a YAML spec from a file path or from YAML text.

    A ``pathlib.Path`` (or a one-line string naming an existing file or ending in ``.yaml`` /
    ``.yml``) is read as a file whose folder anchors relative paths; any other string is parsed as
    YAML text relative to the current directory. Uses ``yaml.safe_load`` only.
    """
    import yaml

    text: str
    origin = "<string>"
    base_dir: Path | None = None
    is_path = isinstance(path_or_text, os.PathLike) or (
        "\n" not in path_or_text
        and (path_or_text.endswith((".yaml", ".yml")) or os.path.isfile(path_or_text))
    )
    if is_path:
        path = Path(path_or_text)
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise _error(origin, None, None, f"cannot read spec file: {exc}") from None
        base_dir = path.resolve().parent
    else:
        text = str(path_or_text)
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise _error(origin, None, None, f"invalid YAML: {exc}") from None
    return parse_spec(document, origin, base_dir)


__all__ = [
    "COMPRESSIONS",
    "DEFAULT_COMPRESSION",
    "FORMATS",
    "ArrayNames",
    "CsvOptions",
    "DatasetSpec",
    "SourceSpec",
    "load_spec",
    "parse_spec",
    "validate_cron",
]
