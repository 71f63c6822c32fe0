"""``datastack ls``, ``show`` and ``gc``: read the catalog, collect garbage."""

from __future__ import annotations

import argparse
import math
from typing import TYPE_CHECKING, Any

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

    store = open_store(args.storage)
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

    catalog = open_store(args.storage).catalog
    record = (
        catalog.get(args.name, args.version_) if args.version_ is not None
        else catalog.latest(args.name)
    )
    data = details_of(record, catalog.versions(args.name))
    if getattr(args, "preview", None):
        _write_preview(args, record)
        data["preview"] = args.preview
    if args.json:
        print_json(data)
        return EXIT_OK
    _print_record(record, data["versions"])
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
    rows = []
    for split, length in record.splits.items():
        arrays = per_split.get(split, {})
        shown = "; ".join(
            f"{array}: {info.get('dtype')} {tuple(info.get('shape', ()))}"
            for array, info in arrays.items()
            if isinstance(info, dict)
        )
        rows.append([split, str(length), shown or "-"])
    print_table("splits and schema", ["split", "samples", "schema"], rows)
    features = record.schema.get("features") if isinstance(record.schema, dict) else None
    if features:
        print(plain("features: " + ", ".join(map(str, features)), 5000))
    for field in (record.schema.get("fields") or []) if isinstance(record.schema, dict) else []:
        shape = "x".join("?" if d is None else str(d) for d in field.get("shape") or []) or "-"
        kind, dtype = field.get("kind"), field.get("dtype")
        print(plain(f"field {field.get('name')}: {kind} {dtype} {shape}", 500))
    for column, classes in (record.encodings or {}).items():
        labels = ", ".join(f"{i}={c}" for i, c in enumerate(classes[:200]))
        more = f" ... ({len(classes)} classes)" if len(classes) > 200 else ""
        print(plain(f"encoding {column}: {labels}{more}", 5000))


def _write_preview(args: argparse.Namespace, record: Any) -> None:
    from datastack.api import load
    from datastack.preview import render_preview

    split = next(iter(record.splits), "train")
    it = load(record.name, split, version=record.version, storage=args.storage)
    render_preview(it, args.preview, title=f"{record.name} v{record.version} / {split}",
                   record=record)


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
