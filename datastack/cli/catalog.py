"""``datastack ls``, ``show``, ``gc`` and ``delete``: read the catalog, collect garbage,
remove a dataset."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

from datastack._codes import describe_new_values
from datastack._format import shared_line
from datastack._uri import redact
from datastack.cli._common import (
    EXIT_OK,
    fmt_size,
    fmt_time,
    json_arg,
    open_store,
    plain,
    print_json,
    print_table,
    storage_arg,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord


def register(sub: Any) -> None:
    p = sub.add_parser("ls", help="list datasets", description="Table of datasets.")
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_ls)

    p = sub.add_parser("show", help="show one dataset", description="Versions, sources, schema.")
    p.add_argument("name", metavar="NAME")
    p.add_argument(
        "--version", dest="version_", type=_positive_int, default=None, metavar="V",
        help="a published version (default: the latest)",
    )
    p.add_argument("--preview", metavar="FILE.png", default=None,
                   help="also draw a picture of the first samples into FILE.png")
    p.add_argument("--split", default=None, metavar="SPLIT",
                   help="the split --preview draws (default: train, else the first split)")
    p.add_argument("--count", type=_positive_int, default=16, metavar="N",
                   help="samples --preview draws (default 16)")
    p.add_argument("--croissant", action="store_true",
                   help="print the version's MLCommons Croissant 1.0 JSON-LD metadata")
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_show)

    p = sub.add_parser(
        "gc",
        help="delete old versions and orphaned resources",
        description="Delete versions beyond the newest N (per dataset) and orphaned resources.",
    )
    p.add_argument(
        "--keep", type=_positive_int, default=3, metavar="N", help="versions to keep (>= 1)"
    )
    p.add_argument(
        "--grace",
        type=_seconds,
        default=3600.0,
        metavar="SECONDS",
        help="do not delete anything newer than this (readers may still use it; default 3600)",
    )
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_gc)

    p = sub.add_parser(
        "delete",
        help="remove a dataset: its versions, status and (after the gc grace period) files",
        description="Remove a dataset from the catalog at once (every version deleted, its "
        "status gone: ls, status and load no longer see it); `datastack gc` removes its files "
        "after the grace period. Asks for confirmation on a terminal; elsewhere needs --yes.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--yes", "-y", action="store_true", help="do not ask for confirmation")
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_delete)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}") from None
    if not 1 <= value < 2**63:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"expected a finite number of seconds >= 0, got {text!r}")
    return value


def run_ls(args: argparse.Namespace) -> int:
    from datastack.catalog.overview import catalog_entries, ls_rows

    store, cache, reason = _open_or_offline(args.storage)
    if reason is not None:
        return _ls_cached(args, store, cache, reason)
    rows = ls_rows(catalog_entries(store.catalog))
    if args.json:
        print_json(rows)
        return EXIT_OK
    print_table(
        f"datasets in {store.uri}",
        ["name", "state", "version", "splits", "size", "published"],
        [
            [
                row["name"],
                row["state"],
                str(row["version"]),
                ", ".join(f"{k}: {v}" for k, v in row["splits"].items()),
                fmt_size(row["size"]),
                fmt_time(row["published_at"]),
            ]
            for row in rows
        ],
    )
    if not rows:
        print("no datasets yet: run `datastack refresh --spec FILE`")
    return EXIT_OK


def run_show(args: argparse.Namespace) -> int:
    from datastack.catalog.overview import details_of

    store, cache, reason = _open_or_offline(args.storage)
    if reason is not None:
        record, versions = _cached_record(store, cache, args.name, args.version_, reason)
    else:
        catalog = store.catalog
        record = (
            catalog.get(args.name, args.version_) if args.version_ is not None
            else catalog.latest(args.name)
        )
        versions = catalog.version_summaries(args.name)  # numbers, states, times only
    if getattr(args, "croissant", False):
        from datastack.croissant import croissant

        print_json(croissant(record, storage=store.uri))
        return EXIT_OK
    data = details_of(record, versions)
    if reason is not None:
        data["offline"] = reason
    if getattr(args, "preview", None):
        data["preview_split"] = _write_preview(args, record)
        data["preview"] = args.preview
    if args.json:
        print_json(data)
        return EXIT_OK
    if reason is not None:
        print(f"{reason}: from the local cache (cached versions only)")
    _print_record(record, data["versions"])
    if data.get("storage"):
        print(shared_line(data["storage"]))
    return EXIT_OK


# -- offline: what the local cache holds (docs/cache.md) -------------------------------------
def _open_or_offline(storage: str | None) -> tuple[Any, Any, str | None]:
    """``(store, cache, None)`` online; ``(store, cache, reason)`` when a remote storage is
    offline (``DATASTACK_OFFLINE=1``) or does not answer, and the local cache is on."""
    from datastack.errors import NotCachedError, StorageUnavailableError
    from datastack.offline import OFFLINE_ENV, is_offline
    from datastack.storage.diskcache import default_disk_cache
    from datastack.store import Store

    store = Store.open(storage)
    cache = default_disk_cache() if store.storage.remote else None
    if cache is not None and is_offline():
        return store, cache, f"offline ({OFFLINE_ENV}=1)"
    try:
        store.ping()
    except StorageUnavailableError:
        if cache is None:
            raise
        return store, cache, f"storage {store.uri} unreachable"
    if store.storage.remote and is_offline():  # offline asked, but no cache to read
        raise NotCachedError(
            f"offline ({OFFLINE_ENV}=1) but the local cache is disabled "
            "(DATASTACK_CACHE_DIR_BYTES=0): nothing to list"
        )
    return store, cache, None


def _cached_names(store: Any, cache: Any) -> list[str]:
    from datastack.offline import store_key

    folder = cache.records_dir / store_key(store)
    return sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []


def _cached_record(
    store: Any, cache: Any, name: str, version: int | None, reason: str
) -> tuple[VersionRecord, list[VersionRecord]]:
    """The cached record ``load`` would serve offline, and every usable cached version."""
    import warnings

    from datastack.identifiers import validate_dataset_name
    from datastack.offline import CachedVersionWarning, cached_version

    name = validate_dataset_name(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CachedVersionWarning)
        latest = cached_version(cache, store, name, None, reason)
        record = latest if version is None else cached_version(cache, store, name, version,
                                                               reason)
    versions = [r for r in _usable(store, cache, name) if r.version <= latest.version]
    return record, versions


def _usable(store: Any, cache: Any, name: str) -> list[VersionRecord]:
    """Cached records of ``name`` whose data is in the cache (what offline loads can read)."""
    from datastack.offline import cached_records, store_key, version_resources

    out = []
    for record in cached_records(cache, store_key(store), name):
        digests = [r.get("sha256") for r in version_resources(record)]
        if digests and all(d and cache.path(str(d)) is not None for d in digests):
            out.append(record)
    return out


def _ls_cached(args: argparse.Namespace, store: Any, cache: Any, reason: str) -> int:
    import sys

    usable_of = [usable for name in _cached_names(store, cache)
                 if (usable := _usable(store, cache, name))]  # one scan of the cache a name
    rows: list[dict[str, Any]] = [
        {"name": r.name, "state": "cached", "version": r.version, "splits": dict(r.splits),
         "size": r.size, "published_at": r.published_at, "cached": True,
         "versions_cached": [v.version for v in usable]}
        for usable in usable_of for r in [usable[-1]]
    ]
    if args.json:
        print_json(rows)
        return EXIT_OK
    print(f"datastack: {reason}: listing the local cache {cache.root}", file=sys.stderr)
    print_table(
        f"datasets cached locally for {store.uri} ({reason})",
        ["name", "state", "version", "cached versions", "splits", "size", "published"],
        [[row["name"], "cached (offline)", str(row["version"]),
          ", ".join(map(str, row["versions_cached"])),
          ", ".join(f"{k}: {v}" for k, v in row["splits"].items()),
          fmt_size(row["size"]), fmt_time(row["published_at"])] for row in rows],
    )
    if not rows:
        from datastack._uri import storage_for_shell

        shell = storage_for_shell(store.connection_uri if store.kind != "custom" else store.uri)
        print(f"nothing cached: while online, `datastack pull NAME --storage {shell}`")
    return EXIT_OK


def _print_record(record: VersionRecord, versions: list[dict[str, Any]]) -> None:
    print(f"{record.name} v{record.version} ({record.status})")
    if record.description:
        print(plain(record.description, 2000))
    print(f"format: {plain(record.format, 80)}   spec hash: {record.spec_hash[:16]}")
    producer = record.producer or {}
    lineage = ", ".join(f"{k}={plain(v, 200)}" for k, v in producer.items() if v is not None)
    print(f"lineage: {lineage}, published {fmt_time(record.published_at)}")
    print_table(
        "versions",
        ["version", "status", "published"],
        [[str(v["version"]), v["status"], fmt_time(v["published_at"])] for v in versions],
    )
    rows = []
    for s in record.sources:
        algo = "sha256" if s.get("sha256") else "md5"
        pin = "tracked " if s.get("track") else ""
        rows.append([
            redact(str(s.get("url", ""))), f"{pin}{algo}:{s.get(algo) or '-'}",
            fmt_size(s.get("size")), str(s.get("etag") or "-"),
            str(s.get("last_modified") or "-"),
        ])
    print_table("sources", ["url", "checksum", "size", "etag", "last modified"], rows)
    per_split = record.schema.get("splits", {}) if isinstance(record.schema, dict) else {}
    fields = _fields_by_name(record)
    rows = []
    for split, length in record.splits.items():
        arrays = per_split.get(split, {})
        shown = "; ".join(
            f"{array}: {_sample_schema(info, fields.get(array))}"
            for array, info in arrays.items()
            if isinstance(info, dict)
        )
        rows.append([split, str(length), shown or "-"])
    print_table("splits and schema (one sample)", ["split", "samples", "schema"], rows)
    features = record.schema.get("features") if isinstance(record.schema, dict) else None
    if features:
        print(plain("features: " + ", ".join(map(str, features)), 5000))
    for name, field in _fields_by_name(record).items():
        shown = _sample_schema({"dtype": field.get("dtype")}, field)
        print(plain(f"field {name}: {shown}", 500))
    for column, classes in (record.encodings or {}).items():
        labels = ", ".join(f"{i}={c}" for i, c in enumerate(classes[:200]))
        more = f" ... ({len(classes)} classes)" if len(classes) > 200 else ""
        print(plain(f"encoding {column}: {labels}{more}", 5000))
    for line in describe_new_values(record.schema):  # what this version added (docs/living.md)
        print(plain(f"v{record.version}: {line}", 500))


def _fields_by_name(record: VersionRecord) -> dict[str, dict[str, Any]]:
    schema = record.schema if isinstance(record.schema, dict) else {}
    return {str(f.get("name")): f for f in schema.get("fields") or [] if isinstance(f, dict)}


def _dims(shape: list[Any]) -> str:
    text = ", ".join("?" if d is None else str(d) for d in shape)
    return f"({text},)" if len(shape) == 1 else f"({text})"


def _sample_schema(info: dict[str, Any], field: dict[str, Any] | None) -> str:
    """One sample's dtype and shape: the field's own (per-sample) shape when the record lists
    the field (an image, string or ragged field stores only its sample count per split),
    else the stored array's shape without its first (sample) dimension.

    >>> _sample_schema({"dtype": "uint8", "shape": [3]},
    ...                {"kind": "image", "shape": None, "modes": ["L", "RGB"]})
    'uint8 image (?, ?) or (?, ?, C), modes L, RGB'
    >>> _sample_schema({"dtype": "float32", "shape": [150, 4]}, None)
    'float32 (4,)'
    """
    dtype = info.get("dtype")
    if field is None:
        return f"{dtype} {_dims(list(info.get('shape') or [])[1:])}"
    kind, shape = field.get("kind"), field.get("shape")
    if shape is None:
        modes = ", ".join(map(str, field.get("modes") or []))
        dims = "(?, ?) or (?, ?, C)" if kind == "image" else "(varies)"
        return f"{dtype} {kind} {dims}" + (f", modes {modes}" if modes else "")
    return f"{dtype} {kind} {_dims(list(shape))}"


#: The most samples ``show --preview --count`` draws.
MAX_PREVIEW_COUNT = 1024


def preview_split(record: Any, wanted: str | None) -> str:
    """The split ``show --preview`` draws: ``wanted``, else train, else the first split."""
    from datastack.errors import ConfigurationError

    splits = list(record.splits)
    if wanted is None:
        return "train" if "train" in splits or not splits else splits[0]
    if wanted not in splits:
        raise ConfigurationError(
            f"{record.name} v{record.version} has no split {wanted!r}; its splits: "
            f"{', '.join(splits) or 'none'} (pass one of them to --split)"
        )
    return wanted


def _write_preview(args: argparse.Namespace, record: Any) -> str:
    from datastack.api import load
    from datastack.preview import render_preview

    split = preview_split(record, args.split)
    if args.count > MAX_PREVIEW_COUNT:
        from datastack.errors import ConfigurationError

        raise ConfigurationError(
            f"--count {args.count} is more than a preview draws (at most {MAX_PREVIEW_COUNT})"
        )
    it = load(record.name, split, version=record.version, storage=args.storage)
    render_preview(it, args.preview, count=args.count,
                   title=f"{record.name} v{record.version} / {split}", record=record)
    return split


def run_delete(args: argparse.Namespace) -> int:
    import sys

    from datastack.errors import ConfigurationError
    from datastack.identifiers import validate_dataset_name

    name = validate_dataset_name(args.name)
    store = open_store(args.storage)
    if not args.yes:
        if not sys.stdin.isatty():
            raise ConfigurationError(
                f"refusing to delete dataset {name!r} without confirmation: stdin is not a "
                f"terminal; run `datastack delete {name} --yes` to delete it"
            )
        answer = input(
            f"Delete dataset {name!r} from {store.uri} (every version; files after the gc "
            "grace period)? [y/N] "
        )
        if answer.strip().lower() not in ("y", "yes"):
            print(f"{name}: nothing deleted")
            return EXIT_OK
    deleted = store.catalog.delete_dataset(name)
    if args.json:
        print_json({"name": name, "deleted_versions": deleted})
        return EXIT_OK
    shown = ", ".join(f"v{v}" for v in deleted) or "none published"
    print(f"{name}: deleted (versions: {shown}); `datastack gc` removes its files after the "
          "grace period (--grace, default 3600 s)")
    return EXIT_OK


def run_gc(args: argparse.Namespace) -> int:
    store = open_store(args.storage)
    report = store.catalog.gc(store.storage, keep=args.keep, grace_seconds=args.grace)
    data = report.to_dict()
    if args.json:
        print_json(data)
    else:
        for key, value in data.items():
            shown = len(value) if isinstance(value, (list, tuple, set, dict)) else value
            print(f"{key}: {shown}")
    return EXIT_OK
