"""``datastack status``: is every dataset fresh? ``datastack unlock``: free a held lease.

``status`` exits 0 only when every listed dataset is ``fresh`` (1 otherwise), so a cron job or
a monitor can run it; ``--json`` prints a list of objects with ``name``, ``state``,
``version``, ``schedule``, ``last_success``, ``last_check`` and ``last_failure`` (null or
``{"at", "reason"}``).
"""

from __future__ import annotations

import argparse
from typing import Any

from datastack.cli._common import (
    EXIT_FAILED,
    EXIT_OK,
    json_arg,
    open_store,
    plain,
    print_json,
    print_table,
    storage_arg,
)
from datastack.errors import ConfigurationError


def register(sub: Any) -> None:
    p = sub.add_parser(
        "status",
        help="freshness of datasets: fresh, overdue, failing or never",
        description="Per dataset: fresh | overdue (a schedule is set and no successful check "
        "in more than two of its intervals) | failing (the last check failed) | never (no "
        "successful refresh yet), with the last success and the last failure's reason. "
        "Exit 0 only when every listed dataset is fresh.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="datasets (default: all)")
    storage_arg(p)
    json_arg(p)
    p.set_defaults(run=run_status)

    p = sub.add_parser(
        "unlock",
        help="release the refresh lease of a dataset (operators)",
        description="Release a dataset's refresh lease, fenced by its token: only the lease "
        "with that token (default: the one held now) is released; a refresh that took it "
        "meanwhile keeps its own.",
    )
    p.add_argument("name", metavar="NAME")
    p.add_argument("--token", type=int, default=None, metavar="T", help="the lease token")
    storage_arg(p)
    p.set_defaults(run=run_unlock)


def run_status(args: argparse.Namespace) -> int:
    store = open_store(args.storage)
    rows = [status.summary() for status in store.catalog.statuses(args.names or None)]
    if args.json:
        print_json(rows)
    else:
        import sys

        reason_limit = 120 if sys.stdout.isatty() else 10_000  # piped: the whole reason
        print_table(
            f"dataset status in {store.uri}",
            ["name", "state", "version", "schedule", "last success", "last failure"],
            [
                [
                    r["name"],
                    r["state"],
                    "-" if r["version"] is None else f"v{r['version']}",
                    r["schedule"] or "-",
                    r["last_success"] or "-",
                    plain((r["last_failure"] or {}).get("reason") or "-", reason_limit),
                ]
                for r in rows
            ],
        )
        for r in rows:
            for warning in r.get("warnings") or []:
                print(f"warning: {r['name']}: {plain(warning, 300)}")
    return EXIT_OK if all(r["state"] == "fresh" for r in rows) else EXIT_FAILED


def run_unlock(args: argparse.Namespace) -> int:
    store = open_store(args.storage)
    state = store.catalog.lease_state(args.name)
    if state is None or state.owner is None:
        print(f"{args.name}: no lease is held")
        return EXIT_OK
    token = state.token if args.token is None else args.token
    if token != state.token:
        raise ConfigurationError(
            f"{args.name}: the lease is held with token {state.token} by {state.owner!r}, not "
            f"token {token}; nothing was released (run without --token to release it)"
        )
    released = store.catalog.release_lease(args.name, token)
    if not released:
        print(f"{args.name}: the lease changed hands meanwhile; nothing was released")
        return EXIT_FAILED
    print(f"{args.name}: released the lease held by {state.owner!r} (token {token})")
    return EXIT_OK
