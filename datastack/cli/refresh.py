"""``datastack refresh``: run the refresh of a spec's datasets with an engine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from datastack.cli._common import EXIT_FAILED, EXIT_OK, print_json, storage_arg


def register(sub: Any) -> None:
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
    storage_arg(p)
    p.add_argument("--force", action="store_true", help="publish a new version even if unchanged")
    p.add_argument(
        "--engine",
        metavar="ENGINE",
        default=os.environ.get("DATASTACK_ENGINE", "auto"),
        help="run through the Prefect flow (prefect), in-process without Prefect (local), "
        "Prefect when installed (auto, the default), or an engine another package registers",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from datastack.engines import run_refresh

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
        print_json([r.to_dict() for r in results])
    else:
        for r in results:
            version = f"v{r.version}" if r.version is not None else "-"
            print(f"{r.name:<24} {r.status:<10} {version:<6} {r.reason}")
    for r in failed:
        print(f"datastack: {r.name}: {r.status}: {r.reason}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
