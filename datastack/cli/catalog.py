"""``datastack ls``, ``show`` and ``gc``: read the catalog, collect garbage."""

from __future__ import annotations

import argparse
from typing import Any

from datastack._uri import redact
from datastack.cli._common import EXIT_OK, fmt_size, fmt_time, json_arg, print_json, storage_arg
from datastack.errors import NotFoundError


def register(sub: Any) -> None:
    p = sub.add_parser("ls", help="list datasets", description="Table of datasets.")
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_ls)

    p = sub.add_parser("show", help="show one dataset", description="Versions, sources, schema.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", dest="version_", type=int, default=None, metavar="V")
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
    p.add_argument("--keep", type=int, default=3, metavar="N", help="versions to keep (>= 1)")
    p.add_argument(
        "--grace",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="do not delete anything newer than this (readers may still use it; default 3600)",
    )
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_gc)


def _summaries(storage: str | None) -> list[dict[str, Any]]:
    from datastack.store import Store

    catalog = Store.open(storage).catalog
    rows = []
    for name in catalog.datasets():
        try:
            record = catalog.latest(name)
        except NotFoundError:
            continue
        rows.append(
            {
                "name": name,
                "version": record.version,
                "splits": dict(record.splits),
                "size": sum(int(r.get("size", 0)) for r in record.resources),
                "published_at": record.published_at,
                "description": record.description,
            }
        )
    return rows


def run_ls(args: argparse.Namespace) -> int:
    rows = _summaries(args.storage)
    if args.json:
        print_json(rows)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"datasets in {redact(_storage_label(args.storage))}")
    for column in ("name", "version", "splits", "size", "published"):
        table.add_column(column)
    for row in rows:
        splits = ", ".join(f"{k}: {v}" for k, v in row["splits"].items())
        table.add_row(
            row["name"], str(row["version"]), splits, fmt_size(row["size"]),
            fmt_time(row["published_at"]),
        )
    Console(soft_wrap=True).print(table)
    if not rows:
        print("no datasets yet: run `datastack refresh --spec FILE`")
    return EXIT_OK


def _storage_label(storage: str | None) -> str:
    from datastack._uri import default_storage_uri

    return default_storage_uri(storage)


def run_show(args: argparse.Namespace) -> int:
    from datastack.store import Store

    catalog = Store.open(args.storage).catalog
    record = catalog.get(args.name, args.version_) if args.version_ else catalog.latest(args.name)
    versions = [
        {"version": v.version, "status": v.status, "published_at": v.published_at}
        for v in catalog.versions(args.name)
    ]
    data = record.to_dict()
    data["versions"] = versions
    if getattr(args, "preview", None):
        _write_preview(args, record)
        data["preview"] = args.preview
    if args.json:
        print_json(data)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    console = Console(soft_wrap=True)
    console.print(f"[bold]{record.name}[/bold] v{record.version} ({record.status})")
    if record.description:
        console.print(record.description)
    console.print(f"format: {record.format}   spec hash: {record.spec_hash[:16]}")
    producer = record.producer or {}
    console.print(
        "lineage: "
        + ", ".join(f"{k}={v}" for k, v in producer.items() if v is not None)
        + f", published {fmt_time(record.published_at)}"
    )
    table = Table(title="versions")
    for column in ("version", "status", "published"):
        table.add_column(column)
    for v in versions:
        table.add_row(str(v["version"]), str(v["status"]), fmt_time(v["published_at"]))
    console.print(table)
    table = Table(title="sources")
    for column in ("url", "checksum", "size", "etag", "last modified"):
        table.add_column(column)
    for s in record.sources:
        algo = "sha256" if s.get("sha256") else "md5"
        table.add_row(
            redact(str(s.get("url", ""))), f"{algo}:{s.get(algo) or '-'}",
            fmt_size(s.get("size")), str(s.get("etag") or "-"),
            str(s.get("last_modified") or "-"),
        )
    console.print(table)
    table = Table(title="splits and schema")
    for column in ("split", "samples", "schema"):
        table.add_column(column)
    per_split = record.schema.get("splits", {}) if isinstance(record.schema, dict) else {}
    for split, length in record.splits.items():
        arrays = per_split.get(split, {})
        shown = "; ".join(
            f"{array}: {info.get('dtype')} {tuple(info.get('shape', ()))}"
            for array, info in arrays.items()
            if isinstance(info, dict)
        )
        table.add_row(split, str(length), shown or "-")
    console.print(table)
    features = record.schema.get("features") if isinstance(record.schema, dict) else None
    if features:
        console.print("features: " + ", ".join(map(str, features)))
    for field in (record.schema.get("fields") or []) if isinstance(record.schema, dict) else []:
        shape = "x".join("?" if d is None else str(d) for d in field.get("shape") or []) or "-"
        kind, dtype = field.get("kind"), field.get("dtype")
        console.print(f"field {field.get('name')}: {kind} {dtype} {shape}")
    for column, classes in (record.encodings or {}).items():
        console.print(f"encoding {column}: " + ", ".join(f"{i}={c}" for i, c in enumerate(classes)))
    return EXIT_OK


def _write_preview(args: argparse.Namespace, record: Any) -> None:
    from datastack.api import load
    from datastack.preview import render_preview

    split = next(iter(record.splits), "train")
    it = load(record.name, split, version=record.version, storage=args.storage)
    render_preview(it, args.preview, title=f"{record.name} v{record.version} / {split}")


def run_gc(args: argparse.Namespace) -> int:
    from datastack.errors import ConfigurationError
    from datastack.store import Store

    if args.keep < 1:
        raise ConfigurationError(f"--keep must be at least 1, got {args.keep}")
    store = Store.open(args.storage)
    report = store.catalog.gc(store.storage, keep=args.keep, grace_seconds=args.grace)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
    if args.json:
        print_json(data)
    else:
        for key, value in data.items():
            shown = len(value) if isinstance(value, (list, tuple, set)) else value
            print(f"{key}: {shown}")
    return EXIT_OK
