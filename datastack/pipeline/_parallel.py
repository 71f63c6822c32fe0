"""One dataset prepared in parallel (``docs/scale.md``): a table (CSV, JSON Lines: byte
ranges; Parquet: runs of row groups) or an image folder (runs of its files,
:mod:`._part_folders`) cut into parts, each part staged and written by a worker (local
processes or a Dask cluster), the decisions that need every row taken once, here.

The version is the one a single process gives, sample for sample: the parts are cut where
records start (:mod:`datastack.formats._parts`); each part's policy state (a column's kind,
its labels in first-appearance order, counts) is merged in part order as if one policy had
read them one after another (a part whose first values decided a kind differently is staged
again with the kinds of the parts before it: what one process would have done); the final
codes come from the merged labels; row ids are the content hashes of every row numbered
together; the splits are cut over all rows (the previous version's rows kept). Each part's
rows of a split are a run of that split in source order, so the manifest is each split's
shards part after part. The lease, the gates and the publish stay with the refresh.
"""

from __future__ import annotations

import itertools
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from datastack._env import env_int, env_size
from datastack.pipeline._part_tasks import (
    KILL_PART_ENV,
    PartJob,
    PartStaged,
    PartWrite,
    ScanJob,
    SplitRows,
    scan_part_range,
    stage_part,
    write_part,
)

if TYPE_CHECKING:  # pragma: no cover
    from datastack.canonical.rowids import PreviousVersion
    from datastack.factory import DatasetFactory
    from datastack.store import Store

log = logging.getLogger("datastack.pipeline")

WORKERS_ENV = "DATASTACK_WORKERS"
DASK_ENV = "DATASTACK_DASK_ADDRESS"
PART_BYTES_ENV = "DATASTACK_PART_BYTES"
DEFAULT_PART_BYTES = 64 * 1024 * 1024
#: Formats whose inputs are cut into parts: byte ranges of text, Parquet row groups.
PART_FORMATS = ("csv", "jsonl", "parquet")


def parallel_pool() -> Any:
    """The pool the settings ask for: ``DATASTACK_DASK_ADDRESS`` (a running dask.distributed
    scheduler), else ``DATASTACK_WORKERS`` > 1 local processes; ``None``: one process."""
    import multiprocessing

    from datastack.pipeline._pools import DaskPool, LocalPool

    child = multiprocessing.parent_process() is not None
    address = os.environ.get(DASK_ENV, "").strip()
    if address and (not child or _in_dask_worker()):  # a flow's task on a Dask worker
        return DaskPool(address)
    if child:
        return None  # a worker (or a script imported again by one) never starts a pool
    workers = env_int(WORKERS_ENV, 1, minimum=1)
    return LocalPool(workers) if workers > 1 else None


def warm_parallel(factory: DatasetFactory) -> Any:
    """Before the sources are retrieved: when the dataset will likely be prepared in parts,
    get the pool's workers ready on a thread (:meth:`LocalPool.warm`: the process local
    workers fork from; :meth:`DaskPool.warm`: the modules a part needs, on every Dask
    worker). Returns that thread, or ``None``."""
    if not _cuttable(factory.spec):
        return None
    pool = parallel_pool()
    return None if pool is None else pool.warm()


def _in_dask_worker() -> bool:
    """True inside a task of a dask.distributed worker (whose process has a parent)."""
    import sys

    distributed = sys.modules.get("distributed")
    if distributed is None:
        return False
    try:
        distributed.get_worker()
    except ValueError:
        return False
    return True


def _cuttable(spec: Any) -> bool:
    """Whether a spec's format is one parts cover: a table (:data:`PART_FORMATS`) or an
    image folder."""
    from datastack.pipeline._part_folders import folder_eligible

    return spec.format in PART_FORMATS or folder_eligible(spec)


def _eligible(factory: DatasetFactory, sources: Sequence[dict[str, Any]],
              needs_stats: bool) -> bool:
    spec = factory.spec
    several = len(spec.sources) > 1 and spec.format in PART_FORMATS  # each cut in turn
    return bool(getattr(factory, "tail_appends", False) and _cuttable(spec)
                and (len(spec.sources) == 1 or several)
                and not any(source.split for source in spec.sources)
                and not needs_stats and spec.preprocessor is None
                and len(sources) == len(spec.sources))


def prepare_in_parts(
    factory: DatasetFactory, sources: Sequence[dict[str, Any]], store: Store,
    known: dict[str, list[str]] | None, previous: PreviousVersion | None, shard_bytes: int,
    needs_stats: bool,
) -> tuple[Any, list[dict[str, Any]]] | None:
    """``(prepared, manifest)`` of a version prepared part by part by the pool the settings
    name, or ``None`` when it is prepared by one process (no pool, one part, a case parts
    do not cover)."""
    from datastack.canonical.rowids import identity_of

    pool = parallel_pool()
    if pool is None or not _eligible(factory, sources, needs_stats):
        return None
    spec = factory.spec
    identity = identity_of(spec.key)
    history = None
    if previous is not None and spec.splits:
        history = previous.history(identity, list(spec.splits))
        if history is not None and history.identity != identity:
            return None  # a new key: continuing by content is the one-process path's
    started = time.perf_counter()
    scratch = tempfile.mkdtemp(prefix="datastack-parts-")
    try:
        with pool:
            cut = [_parts(pool, spec, k, dict(source), store)
                   for k, source in enumerate(sources)]
            parts = [part for found, _ in cut for part in found]
            clock = {"cut": time.perf_counter() - started}
            if len(parts) < 2:
                return None
            kill = os.environ.get(KILL_PART_ENV, "")
            # a first version of a table, without key: or stratified splits, needs no row's
            # hash here: the workers keep them (a Dask cluster sends 8 bytes a row, not 24)
            lean = (spec.format in PART_FORMATS and history is None and not spec.key
                    and not spec.stratify)
            jobs = [PartJob(spec, dict(sources[part.source]), part, k, store.connection_uri,
                            scratch, kill=kill, lean=lean) for k, part in enumerate(parts)]
            with EarlySplits(spec, history, [guess for _, guess in cut]) as early:
                staged = _settled(pool, jobs, pool.map(stage_part, jobs))
                clock["stage"] = time.perf_counter() - started - sum(clock.values())
                plan = _plan(spec, staged, known, history, identity, early)
            clock["plan"] = time.perf_counter() - started - sum(clock.values())
            writes = pool.map(write_part, [
                PartWrite(job, plan["fields"], plan["transforms"][k], plan["encodings"],
                          plan["features"], plan["target"],
                          SplitRows.of(plan["splits"][k], staged[k].rows), plan["ids"][k],
                          identity, shard_bytes, spec.compression,
                          tuple(staged[k].folder.get("skipped", ())), plan["earlier"][k])
                for k, job in enumerate(jobs)])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    clock["write"] = time.perf_counter() - started - sum(clock.values())
    log.info("%s: prepared in %d parts by %s (%s)", spec.name, len(parts), pool.describe(),
             ", ".join(f"{k} {v:.2f} s" for k, v in clock.items()))
    return _version(plan, writes)


def _parts(pool: Any, spec: Any, index: int, source: dict[str, Any], store: Store
           ) -> tuple[list[Any], int | None]:
    """The parts of source ``index``, its byte ranges scanned on the workers (each reads its
    own range once) and assembled here (:mod:`datastack.formats._parts`); a Parquet file's
    row groups from its footer, here. With them, a guess of the rows (text: the records the
    scans counted; else ``None``)."""
    from datastack.formats._parts import (
        Part,
        assemble,
        cut_parts,
        ranges,
        records_guess,
        text_plan,
    )
    from datastack.storage.chunked import open_raw

    part_bytes = env_size(PART_BYTES_ENV, DEFAULT_PART_BYTES)
    if spec.format not in ("csv", "jsonl"):  # Parquet row groups, a folder's (tar's) files
        with open_raw(store.storage, source) as raw:
            return cut_parts(raw, "parquet" if spec.format == "parquet" else "tar", None,
                             part_bytes, source=index,
                             name=spec.sources[index].filename), None
    with open_raw(store.storage, source) as raw:
        plan = text_plan(raw, spec.format or "", spec.options)
        size, name = int(raw.size), raw.identifier.rsplit("/", 1)[-1]
    if plan is None:
        return [], None
    spans = ranges(plan.head, size, part_bytes, multiple=pool.slots())
    scans = pool.map(scan_part_range, [ScanJob(source, store.connection_uri, plan, lo, hi)
                                       for lo, hi in spans])
    cuts = assemble(scans, plan.head) or []
    return [Part(index, name, "bytes", a, b, plan.head) for a, b in cuts], records_guess(scans)


class EarlySplits:
    """A first version's splits drawn on a thread while the parts are staged, from the rows
    the cut counted (the draw needs only their number): used when the parts hold exactly
    that many rows (:func:`_rows` checks), else drawn again. Stratified splits wait for the
    labels."""

    def __init__(self, spec: Any, history: Any, guesses: list[int | None]) -> None:
        known = [g for g in guesses if g is not None]
        self.rows = sum(known) if guesses and len(known) == len(guesses) else None
        self.wanted = bool(spec.splits) and history is None and not spec.stratify
        self.spec = spec
        self._thread: Any = None
        self._future: Any = None

    def __enter__(self) -> EarlySplits:
        if self.wanted and self.rows:
            from concurrent.futures import ThreadPoolExecutor

            from datastack.splits import split_indices

            self._thread = ThreadPoolExecutor(1)
            self._future = self._thread.submit(split_indices, self.rows, self.spec.splits,
                                               self.spec.seed, None)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True, cancel_futures=True)

    def splits_of(self, rows: int, labels: Any) -> Any:
        """The early draw when it is the one wanted (``rows`` rows, no labels), else None."""
        if self._future is None or labels is not None:
            return None
        if rows != self.rows:
            log.debug("%s: the cut counted %d rows, the parts hold %d: splits drawn again",
                      self.spec.name, self.rows, rows)
            return None
        log.debug("%s: splits drawn while the parts were staged", self.spec.name)
        return self._future


def _settled(pool: Any, jobs: list[PartJob], staged: list[PartStaged]) -> list[PartStaged]:
    """Stage again, with the kinds the parts before decided, each part that decided a
    column's kind otherwise (one process would have read it with those kinds); ``jobs[k]``
    becomes the job with those kinds (a write that finds its staging file gone, on another
    machine or after its worker died, stages it again the same way)."""
    decided: dict[str, bool] = {}
    out = list(staged)
    for k, part in enumerate(staged):
        presets = dict(decided)
        differs = any(c.categorical is not None and c.name in presets
                      and presets[c.name] != c.categorical for c in part.columns)
        if differs:
            jobs[k] = replace(jobs[k], presets=presets)
            out[k] = pool.map(stage_part, [jobs[k]])[0]
        for column in out[k].columns:
            if column.categorical is not None:
                decided.setdefault(column.name, bool(column.categorical))
    return out


def _merged(spec: Any, staged: list[PartStaged]) -> Any:
    """One policy holding what every part's policy learnt, in part order."""
    from datastack.formats import get_format
    from datastack.formats._table_policy import TablePolicy

    fmt = get_format(spec.format or "")
    options = spec.options if spec.options is not None else fmt.default_options()
    merged = TablePolicy(options, f"{fmt.options_key}.")
    merged.set_names(list(staged[0].names), spec.name)
    for i, column in enumerate(merged.columns):
        for part in staged:
            state = part.columns[i]
            if column.categorical is None:
                column.categorical = state.categorical
            for label, code in state.codes.items():
                at = column.codes.setdefault(label, len(column.codes))
                column.counts[at] = column.counts.get(at, 0) + state.counts.get(code, 0)
            column.integral = column.integral and state.integral
            column.any_missing = column.any_missing or state.any_missing
    merged.rows = sum(part.rows for part in staged)
    return merged


def _plan(spec: Any, staged: list[PartStaged], known: Any, history: Any,
          identity: str, early: EarlySplits | None = None) -> dict[str, Any]:
    """The decisions that need every row: fields, codes, each part's transforms, row ids and
    each part's rows of every split."""
    from datastack.pipeline._part_folders import folder_decisions

    plan = (folder_decisions(spec, staged, known) if staged[0].folder
            else _table_decisions(spec, staged, known))
    return {**plan, **_rows(spec, staged, plan, history, early)}


def _table_decisions(spec: Any, staged: list[PartStaged], known: Any) -> dict[str, Any]:
    """A table's fields, codes and each part's transforms, from the merged policy."""
    from datastack._codes import new_values_schema
    from datastack.formats.tables import classic_names

    merged = _merged(spec, staged)
    fields, _, encodings = merged.finish(known)
    fields = classic_names(fields)
    transforms: list[dict[str, Any]] = []
    for part in staged:
        lookups = {}
        for i, state in enumerate(part.columns):
            if merged.columns[i].categorical:
                position = {label: k for k, label in enumerate(encodings[state.name])}
                lookup = np.zeros(max(1, len(state.codes)), np.int64)
                for label, code in state.codes.items():
                    lookup[code] = position[label]
                lookups[i] = lookup
        transforms.append(merged.final_fields(lookups, encodings)[1])
    features = list(fields[0].columns or ()) if fields[0].columns is not None else []
    return {"fields": fields, "transforms": transforms, "encodings": encodings,
            "features": features, "target": fields[-1].name,
            "new_values": new_values_schema(merged.new_values(known))}


def _rows(spec: Any, staged: list[PartStaged], plan: dict[str, Any], history: Any,
          early: EarlySplits | None = None) -> dict[str, Any]:
    """Every row's id and each part's rows of every split (cut over all rows)."""
    from concurrent.futures import ThreadPoolExecutor

    from datastack.rowids import copies_before, occurrences_of_parts
    from datastack.splits import kept_split_indices, split_indices

    transforms, target = plan["transforms"], plan["target"]
    sizes = [part.rows for part in staged]
    starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    ids: list[Any] = [None] * len(staged)
    earlier: list[Any] = [None] * len(staged)
    if spec.splits:
        if spec.key:
            from datastack.canonical.rowids import unique_keys

            unique_keys(np.concatenate([part.hashes for part in staged]), spec.key)
        labels = None
        if spec.stratify:
            labels = np.concatenate([
                t[target](part.targets) if target in t else part.targets
                for t, part in zip(transforms, staged, strict=True)])
        with ThreadPoolExecutor(1) as pool:  # a first version's splits need no ids: at once
            first = None if history is not None else (
                early and early.splits_of(int(starts[-1]), labels)) or pool.submit(
                split_indices, int(starts[-1]), spec.splits, spec.seed, labels)
            if any(part.hashes is None for part in staged):  # lean parts: numbered there
                earlier = copies_before([part.ranks for part in staged])
            else:
                ids = occurrences_of_parts([part.hashes for part in staged],
                                           [part.ranks for part in staged])
            chosen = first.result() if first is not None else kept_split_indices(
                np.concatenate(ids), spec.splits, spec.seed, labels, history.splits)
        splits = [{s: idx[np.searchsorted(idx, a):np.searchsorted(idx, b)] - a  # ascending
                   for s, idx in chosen.items()} for a, b in itertools.pairwise(starts)]
    else:
        splits = [{"train": np.arange(n, dtype=np.int64)} for n in sizes]
    return {"ids": ids, "earlier": earlier, "splits": splits}


def _version(plan: dict[str, Any], writes: list[dict[str, Any]]) -> tuple[Any, list[Any]]:
    """The prepared version: its split sizes, schema and manifest (each split's shards,
    part after part; an empty split keeps one empty shard)."""
    from datastack.canonical.writer import PreparedData

    order = list(plan["splits"][0])
    totals = {s: int(sum(len(p[s]) for p in plan["splits"])) for s in order}
    manifest: list[dict[str, Any]] = []
    for split in order:
        entries = [e for w in writes for e in w["shards"] if e["split"] == split]
        kept = [e for e in entries if int(e["rows"])] or entries[:1]
        manifest += kept
    schema = dict(writes[0]["schema"])
    schema["splits"] = {
        split: {name: {**info, "shape": [totals[split], *info["shape"][1:]]}
                if isinstance(info, dict) and info.get("shape") else info
                for name, info in arrays.items()}
        for split, arrays in (schema.get("splits") or {}).items()}
    schema.update(plan["new_values"])
    return PreparedData(totals, schema, dict(plan["encodings"])), manifest


__all__ = ["DASK_ENV", "PART_BYTES_ENV", "WORKERS_ENV", "parallel_pool", "prepare_in_parts",
           "warm_parallel"]
