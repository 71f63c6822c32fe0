"""The ``prefect`` refresh engine, registered in the ``datastack.engines`` entry-point group.

Importing this module does not import Prefect: the engine imports :mod:`flows.refresh` (and
with it Prefect) only when it runs, so ``datastack refresh --engine local`` and every other
command stay free of it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from datastack.pipeline.sequence import RefreshResult
    from datastack.store import Store


class PrefectEngine:
    """Runs ``refresh_all_flow`` (one task per dataset, its steps as tasks)."""

    name = "prefect"

    def refresh(
        self,
        spec_path: Path,
        names: Sequence[str],
        store: Store,
        *,
        force: bool = False,
        wait_s: float = 0.0,
        quiet: bool = False,
        **options: Any,
    ) -> list[RefreshResult]:
        if quiet:  # the CLI prints one line per dataset itself; Prefect's console stays quiet
            os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        from flows.refresh import run_flow

        return run_flow(spec_path, names, store, force=force, lease_wait_s=wait_s, **options)


ENGINE = PrefectEngine()

__all__ = ["ENGINE", "PrefectEngine"]
