"""The ``datastack`` command: one module per group of subcommands.

Exit codes: 0 success; 1 a requested dataset failed (one line per failure on stderr);
2 bad usage or invalid input (spec, URI, name); 3 storage unavailable; 4 not found.

Each module of this package adds its subcommands with ``register(subparsers)``, setting
``run(args) -> exit code`` as the parser default; :func:`main` maps errors to exit codes.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from datastack._uri import redact
from datastack.cli._common import (
    EXIT_FAILED,
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
)
from datastack.errors import DatastackError, NotFoundError, StorageUnavailableError

#: The modules that add subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "datastack.cli.refresh",
    "datastack.cli.catalog",
    "datastack.cli.status",
    "datastack.cli.pull",
    "datastack.cli.web",
)


def _version() -> str:
    from datastack import __version__

    return f"datastack {__version__}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datastack",
        description="Retrieve, store and serve machine-learning datasets.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMAND_MODULES:
        importlib.import_module(module).register(sub)
    return parser


def _configure_logging() -> None:
    """Warnings of the library on stderr; download progress lines too (when not a TTY)."""
    import logging

    class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
        def emit(self, record: logging.LogRecord) -> None:
            self.stream = sys.stderr  # the stderr of now (tests and embedders replace it)
            super().emit(record)

    root = logging.getLogger("datastack")
    if any(isinstance(h, _Stderr.__mro__[1]) and h.__class__.__name__ == "_Stderr"
           for h in root.handlers):
        return
    handler = _Stderr(sys.stderr)
    handler.setFormatter(logging.Formatter("datastack: %(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    logging.getLogger("datastack.retrieval").setLevel(logging.INFO)
    root.propagate = False


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``datastack`` command; returns the exit code."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # usage errors (exit 2) and --help/--version (exit 0)
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging()
    try:
        code: int = args.run(args)
        return code
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


__all__ = [
    "EXIT_FAILED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "build_parser",
    "main",
]
