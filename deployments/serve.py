"""Serve the scheduled refresh deployments of a spec from one long-running process.

    DATASTACK_STORAGE='mongodb://user:pass@db:27017/team' \
        python deployments/serve.py --spec datasets.yaml

No work pool or worker is needed: this process polls the Prefect API (``PREFECT_API_URL``) and
runs each scheduled or triggered ``refresh-<name>`` run in a subprocess. Stop with Ctrl-C; the
schedules stay active (``pause_on_shutdown=False``) so another serve process can take over.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--spec", required=True, metavar="FILE", help="dataset spec (YAML)")
    parser.add_argument(
        "--storage-env",
        default="DATASTACK_STORAGE",
        metavar="NAME",
        help="environment variable holding the storage URI (default: DATASTACK_STORAGE)",
    )
    parser.add_argument(
        "--storage-secret", default=None, metavar="BLOCK", help="Prefect Secret block instead"
    )
    parser.add_argument("--limit", type=int, default=None, help="max concurrent flow runs")
    args = parser.parse_args(argv)

    spec = Path(args.spec).resolve()
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    os.chdir(ROOT)  # flow runs load flows/refresh.py relative to the working directory

    from prefect import serve

    from deployments.build import build_deployments

    deployments = build_deployments(
        spec, storage_env=args.storage_env, storage_secret=args.storage_secret
    )
    if not deployments:
        print(f"{spec}: no dataset has a schedule; nothing to serve", file=sys.stderr)
        return 2
    serve(*deployments, pause_on_shutdown=False, limit=args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
