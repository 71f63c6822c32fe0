"""``datastack pull NAME... [--version V] [--storage URI]``: fill the local cache."""

from __future__ import annotations

import argparse
from typing import Any

from datastack.cli._common import EXIT_OK, fmt_size, storage_arg


def register(sub: Any) -> None:
    p = sub.add_parser(
        "pull",
        help="copy datasets into the local cache for offline use",
        description="Copy the data of dataset versions into the local cache "
        "($DATASTACK_CACHE_DIR), verified by sha256, so that datastack.load serves them with "
        "the storage unreachable or DATASTACK_OFFLINE=1.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="dataset names")
    p.add_argument(
        "--version", dest="version_", type=int, default=None, metavar="V",
        help="the version to pull (default: the latest published)",
    )
    storage_arg(p)
    p.set_defaults(run=run_pull)


def run_pull(args: argparse.Namespace) -> int:
    from datastack.errors import ConfigurationError
    from datastack.identifiers import validate_dataset_name
    from datastack.offline import pull
    from datastack.storage.diskcache import default_disk_cache
    from datastack.store import Store

    if args.version_ is not None and args.version_ < 1:
        raise ConfigurationError(f"--version must be a positive int, got {args.version_}")
    names = [validate_dataset_name(n) for n in args.names]  # all checked before any I/O
    store = Store.open(args.storage)
    cache = default_disk_cache()
    for name in names:
        result = pull(store, name, args.version_)
        what = f"{result.name} v{result.version} ({fmt_size(result.size)})"
        if result.status == "local":
            print(f"{what}: storage {store.uri} is local; nothing to pull")
        elif result.status == "cached":
            print(f"{what}: already in the local cache {cache.root if cache else ''}")
        else:
            print(f"{what}: pulled into the local cache {cache.root if cache else ''}")
    return EXIT_OK
