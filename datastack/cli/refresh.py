"""``datastack refresh``: run the refresh of a spec's datasets with an engine."""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import Any

from datastack.cli._common import EXIT_FAILED, EXIT_OK, plain, print_json, storage_arg


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
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait up to SECONDS for a lease another refresh holds, then check afresh "
        "(default: report it as locked at once)",
    )
    p.add_argument(
        "--verbose", action="store_true", help="also show the orchestrator's own run logs"
    )
    p.add_argument(
        "--workers", type=int, default=None, metavar="N",
        help="prepare one dataset's parts in N local processes (DATASTACK_WORKERS; a large "
        "CSV, JSON Lines or Parquet table, or an image folder: docs/scale.md)",
    )
    p.add_argument(
        "--dask", default=None, metavar="ADDRESS",
        help="prepare one dataset's parts on a running dask.distributed scheduler "
        "(DATASTACK_DASK_ADDRESS, e.g. tcp://10.0.0.5:8786)",
    )
    p.add_argument("--json", action="store_true", help="print results as JSON")
    p.set_defaults(run=run)


def _parallel_settings(args: argparse.Namespace) -> None:
    """``--workers`` and ``--dask`` as the settings the preparation reads (this process and
    the engines' workers it starts inherit them)."""
    from datastack.errors import ConfigurationError

    if args.workers is not None:
        if args.workers < 1:
            raise ConfigurationError(f"--workers must be at least 1, got {args.workers}")
        os.environ["DATASTACK_WORKERS"] = str(args.workers)
    if args.dask:
        os.environ["DATASTACK_DASK_ADDRESS"] = args.dask


def run(args: argparse.Namespace) -> int:
    from datastack.factory import build_factories
    from datastack.pipeline.engines import run_refresh
    from datastack.specs import load_selected
    from datastack.store import Store

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
    if not (math.isfinite(args.wait) and args.wait >= 0):
        from datastack.errors import ConfigurationError

        raise ConfigurationError(f"--wait must be a number of seconds >= 0, got {args.wait}")
    _parallel_settings(args)
    path = Path(spec).resolve()
    specs = load_selected(path, args.names or None)  # validated, names checked: once
    datasets = build_factories(specs, strict=True)  # a bad `factory:` is a bad spec, exit 2
    store = Store.open(args.storage)
    store.ping()  # an unreachable storage stops the command at once (exit 3)
    results = run_refresh(
        datasets, store, spec_path=path, force=args.force,
        engine=args.engine, wait_s=args.wait, quiet=not args.verbose,
    )
    failed = [r for r in results if not r.ok]
    if args.json:
        print_json([r.to_dict() for r in results])
        return EXIT_FAILED if failed else EXIT_OK
    for r in results:  # one line per dataset: successes on stdout, failures on stderr
        version = f"v{r.version}" if r.version is not None else "-"
        line = f"{r.name:<24} {r.status:<10} {version:<6} {plain(r.reason, 2000)}"
        print(line if r.ok else f"datastack: {line}", file=sys.stdout if r.ok else sys.stderr)
        for warning in r.warnings:
            print(f"datastack: warning: {r.name}: {plain(warning, 2000)}", file=sys.stderr)
    return EXIT_FAILED if failed else EXIT_OK
