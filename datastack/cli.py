"""The ``datastack`` command: refresh, ls, show, gc.

Exit codes: 0 success; 1 a requested dataset failed (one line per failure on stderr);
2 bad usage or invalid input (spec, URI, name); 3 storage unavailable; 4 not found.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from datastack._uri import redact
from datastack.errors import (
    DatastackError,
    NotFoundError,
    StorageUnavailableError,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNAVAILABLE, EXIT_NOT_FOUND = 0, 1, 2, 3, 4


def _storage_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--storage",
        metavar="URI",
        default=None,
        help="storage URI: a path, file:///abs/path or mongodb://[user:pass@]host/DB "
        "(default: $DATASTACK_STORAGE, else ./.datastack)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datastack",
        description="Retrieve, store and serve machine-learning datasets.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "refresh",
        help="retrieve, preprocess and publish datasets of a spec",
        description="Refresh datasets from a spec: a dataset whose sources did not change is "
        "not re-published. Exit 0 when every requested dataset is current.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="datasets to refresh (default: all)")
    p.add_argument(
        "--spec",
        default=None,
        metavar="FILE",
        help="dataset spec (YAML); default: the built-in definitions (mnist, fashion-mnist, "
        "kmnist, cifar10)",
    )
    _storage_arg(p)
    p.add_argument("--force", action="store_true", help="publish a new version even if unchanged")
    p.add_argument(
        "--engine",
        choices=["auto", "prefect", "local"],
        default=os.environ.get("DATASTACK_ENGINE", "auto"),
        help="run through the Prefect flow (prefect), in-process without Prefect (local), or "
        "Prefect when installed (auto, the default)",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")

    p = sub.add_parser("ls", help="list datasets", description="Table of datasets.")
    _storage_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON for machines")

    p = sub.add_parser("show", help="show one dataset", description="Versions, sources, schema.")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--version", dest="version_", type=int, default=None, metavar="V")
    _storage_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON for machines")

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
    _storage_arg(p)
    p.add_argument("--json", action="store_true", help="print JSON for machines")
    return parser


def _version() -> str:
    from datastack import __version__

    return f"datastack {__version__}"


def _fmt_size(n: int | None) -> str:
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _fmt_time(value: Any) -> str:
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return str(value or "-")


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, default=_json_default, sort_keys=True))


def _cmd_refresh(args: argparse.Namespace) -> int:
    from datastack.pipeline import run_refresh

    spec = args.spec
    if spec is None:
        from datastack.builtin import builtin_spec_path

        spec = str(builtin_spec_path())
        if not args.names:
            from datastack.errors import ConfigurationError

            raise ConfigurationError(
                "name the built-in datasets to refresh (e.g. `datastack refresh mnist`), or "
                "pass --spec FILE to refresh every dataset of your own spec"
            )
    results = run_refresh(
        spec, names=args.names or None, storage=args.storage, force=args.force,
        engine=args.engine,
    )
    failed = [r for r in results if r.status not in {"published", "unchanged"}]
    if args.json:
        _print_json([r.to_dict() for r in results])
    else:
        for r in results:
            version = f"v{r.version}" if r.version is not None else "-"
            print(f"{r.name:<24} {r.status:<10} {version:<6} {r.reason}")
    for r in failed:
        print(f"datastack: {r.name}: {r.status}: {r.reason}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK


def _summaries(storage: str | None) -> list[dict[str, Any]]:
    from datastack.catalog import open_catalog

    catalog = open_catalog(storage)
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


def _cmd_ls(args: argparse.Namespace) -> int:
    rows = _summaries(args.storage)
    if args.json:
        _print_json(rows)
        return EXIT_OK
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"datasets in {redact(_storage_label(args.storage))}")
    for column in ("name", "version", "splits", "size", "published"):
        table.add_column(column)
    for row in rows:
        splits = ", ".join(f"{k}: {v}" for k, v in row["splits"].items())
        table.add_row(
            row["name"], str(row["version"]), splits, _fmt_size(row["size"]),
            _fmt_time(row["published_at"]),
        )
    Console(soft_wrap=True).print(table)
    if not rows:
        print("no datasets yet: run `datastack refresh --spec FILE`")
    return EXIT_OK


def _storage_label(storage: str | None) -> str:
    from datastack._uri import default_storage_uri

    return default_storage_uri(storage)


def _cmd_show(args: argparse.Namespace) -> int:
    from datastack.catalog import open_catalog

    catalog = open_catalog(args.storage)
    record = catalog.get(args.name, args.version_) if args.version_ else catalog.latest(args.name)
    versions = [
        {"version": v.version, "status": v.status, "published_at": v.published_at}
        for v in catalog.versions(args.name)
    ]
    data = record.to_dict()
    data["versions"] = versions
    if args.json:
        _print_json(data)
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
        + f", published {_fmt_time(record.published_at)}"
    )
    table = Table(title="versions")
    for column in ("version", "status", "published"):
        table.add_column(column)
    for v in versions:
        table.add_row(str(v["version"]), str(v["status"]), _fmt_time(v["published_at"]))
    console.print(table)
    table = Table(title="sources")
    for column in ("url", "checksum", "size", "etag", "last modified"):
        table.add_column(column)
    for s in record.sources:
        algo = "sha256" if s.get("sha256") else "md5"
        table.add_row(
            redact(str(s.get("url", ""))), f"{algo}:{s.get(algo) or '-'}",
            _fmt_size(s.get("size")), str(s.get("etag") or "-"),
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
    for column, classes in (record.encodings or {}).items():
        console.print(f"encoding {column}: " + ", ".join(f"{i}={c}" for i, c in enumerate(classes)))
    return EXIT_OK


def _cmd_gc(args: argparse.Namespace) -> int:
    from datastack.catalog import open_catalog
    from datastack.errors import ConfigurationError
    from datastack.storage import connect

    if args.keep < 1:
        raise ConfigurationError(f"--keep must be at least 1, got {args.keep}")
    catalog = open_catalog(args.storage)
    report = catalog.gc(connect(args.storage), keep=args.keep, grace_seconds=args.grace)
    data = report.to_dict() if hasattr(report, "to_dict") else dict(vars(report))
    if args.json:
        _print_json(data)
    else:
        for key, value in data.items():
            shown = len(value) if isinstance(value, (list, tuple, set)) else value
            print(f"{key}: {shown}")
    return EXIT_OK


_COMMANDS = {"refresh": _cmd_refresh, "ls": _cmd_ls, "show": _cmd_show, "gc": _cmd_gc}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datastack`` command; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except StorageUnavailableError as exc:
        print(f"datastack: storage unavailable: {redact(str(exc))}", file=sys.stderr)
        return EXIT_UNAVAILABLE
    except NotFoundError as exc:
        print(f"datastack: {redact(str(exc))}", file=sys.stderr)
        return EXIT_NOT_FOUND
    except DatastackError as exc:
        print(f"datastack: {redact(str(exc))}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
