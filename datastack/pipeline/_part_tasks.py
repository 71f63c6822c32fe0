"""The tasks of a parallel preparation (``docs/scale.md``): what a worker does with one part
of a table. Each task needs only its job (the spec, the part, the source's record and the
storage URI): it opens the raw copy itself, and writes its shards straight to the storage.

1. :func:`stage_part` reads the part through the table policy into a staging file in the
   job's scratch folder, and returns what the coordinator merges: the policy's state of each
   column (kind, labels in first-appearance order, counts...), the rows' content hashes (by
   label *names*, so they do not depend on codes) and the target's staged values.
2. :func:`write_part` copies the staged rows into a canonical file with the final codes, the
   splits and row ids the coordinator decided, cuts it into shards and stores the new ones;
   it returns their entries with the worker that wrote them. A staging file that is gone (the
   task runs on another machine, or its worker died) is staged again: the same part gives the
   same rows.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from datastack.formats._parts import Part
    from datastack.specs import DatasetSpec

#: Test hook: kill the worker writing this part (once per marker file): a worker dying
#: mid-shard (tests/living/test_parallel.py).
KILL_PART_ENV = "DATASTACK_TEST_KILL_PART"


def worker_identity() -> dict[str, Any]:
    """Who runs this task: the Dask worker's address, else host and process id."""
    import sys

    out: dict[str, Any] = {"host": socket.gethostname(), "pid": os.getpid()}
    if "distributed" in sys.modules:  # a Dask worker has it loaded; never import it here
        try:
            from distributed import get_worker

            out["dask_worker"] = get_worker().address
        except ValueError:
            pass
    return out


@dataclass(frozen=True)
class PartJob:
    """One part of one source, for a worker (picklable, small)."""

    spec: DatasetSpec
    source: dict[str, Any]  # the source's record (its raw copy's chunks)
    part: Part
    index: int
    storage: str  # the storage URI (credentials included: never logged)
    scratch: str  # the folder of staging files
    presets: dict[str, bool] = field(default_factory=dict)
    #: The coordinator's :data:`KILL_PART_ENV` (a test hook; workers may have been started
    #: before it was set).
    kill: str = ""
    #: The coordinator needs no row's hash (a first version without ``key:`` or stratified
    #: splits): the worker keeps them, ranked, in its staging file and returns the part's
    #: distinct hashes only; its write numbers the rows (:func:`datastack.rowids.part_ids`).
    lean: bool = False

    @property
    def stage_path(self) -> Path:
        return Path(self.scratch) / f"part-{self.index:06d}.h5"


@dataclass(frozen=True)
class ScanJob:
    """One byte range of a source to scan for where records end (the cut into parts)."""

    source: dict[str, Any]
    storage: str
    plan: Any  # datastack.formats._parts.TextPlan
    lo: int
    hi: int


def scan_part_range(job: ScanJob) -> Any:
    """:meth:`TextPlan.scan` of one range, on a worker (its own read of its range)."""
    from datastack.pipeline._malloc import roomy_malloc
    from datastack.storage.chunked import open_raw
    from datastack.store import Store

    with roomy_malloc(), open_raw(Store.open(job.storage).storage, job.source) as raw, \
            raw.opener() as stream:
        return job.plan.scan(stream, job.lo, job.hi)


@dataclass
class PartStaged:
    """What :func:`stage_part` learnt of a part."""

    index: int
    names: list[str]
    columns: list[Any]  # the policy's ColumnState of each column
    rows: int
    hashes: Any  # uint64 content hash of each row (None without splits)
    targets: Any  # the staged target values (provisional codes or numbers)
    worker: dict[str, Any]
    #: A folder's part: its classes, modes and skipped files (``_part_folders``).
    folder: dict[str, Any] = field(default_factory=dict)
    #: ``hashes`` ranked here, on the worker (:func:`datastack.rowids.rank_part`): the
    #: coordinator numbers every row from the parts' distinct hashes, without a sort of all.
    ranks: Any = None

    def __post_init__(self) -> None:
        if self.hashes is not None and self.ranks is None:
            from datastack.rowids import rank_part

            self.ranks = rank_part(self.hashes)


def _policy_inputs(job: PartJob, workdir: Path) -> tuple[Any, Any, Any, list[Any]]:
    """``(format, options, store, raw inputs)`` of a job's part."""
    from datastack.formats import get_format
    from datastack.formats._parts import open_part
    from datastack.formats.inputs import prepare_inputs
    from datastack.storage.chunked import open_raw
    from datastack.store import Store

    spec = job.spec
    fmt = get_format(spec.format or "")
    options = spec.options if spec.options is not None else fmt.default_options()
    store = Store.open(job.storage)
    raw = open_raw(store.storage, job.source)
    if job.part.kind == "row_groups":  # the whole file, read from its row groups
        from datastack.formats.parquet import RowGroupsFormat

        fmt, stream = RowGroupsFormat(job.part.start, job.part.end), raw
    else:
        stream = open_part(raw, job.part)
    inputs = prepare_inputs([(spec.sources[job.part.source], stream)], workdir)
    return fmt, options, store, inputs


def stage_part(job: PartJob) -> PartStaged:
    """Phase 1 of a part (see the module docstring)."""
    from datastack.pipeline._malloc import roomy_malloc

    with roomy_malloc():
        return _stage_part(job)


def _stage_part(job: PartJob) -> PartStaged:
    import h5py

    if job.part.kind == "members":  # files of a folder
        from datastack.pipeline._part_folders import stage_folder_part

        try:
            rows, hashes, targets, folder = stage_folder_part(job)
        except Exception as exc:
            raise named_error(exc, job.part.describe()) from None
        return PartStaged(job.index, [], [], rows, hashes, targets, worker_identity(), folder)

    from datastack.canonical.columns import FieldAppender, StagedRows
    from datastack.canonical.rowids import hash_columns
    from datastack.formats._table_policy import TablePolicy
    from datastack.formats.tables import _rows_of_inputs, classic_names

    workdir = Path(job.scratch)
    fmt, options, _, inputs = _policy_inputs(job, workdir)
    policy = TablePolicy(options, f"{fmt.options_key}.", job.presets)
    where = job.part.describe()
    with h5py.File(job.stage_path, "w") as stage:
        appender = None
        try:
            for _, staged in _rows_of_inputs(fmt, options, inputs, policy):
                if appender is None:
                    appender = FieldAppender(stage.create_group("rows"),
                                             classic_names(policy.staged_fields()))
                appender.append(staged)
        except Exception as exc:
            raise named_error(exc, where) from None
        fields, transforms, encodings = policy.finish(None, check=False)
        fields = classic_names(fields)
        group = stage["rows"]
        columns = {f.name: StagedRows(group[f.stored_name], f) if f.variable
                   else group[f.stored_name] for f in fields}
        hashes = None
        if job.spec.splits:
            hashes = hash_columns(fields, columns, transforms, encodings, job.spec.key,
                                  numbered=False)
        if job.lean and hashes is not None:
            ranks = _keep_ranks(stage, hashes)
            return PartStaged(job.index, list(policy.names or []), policy.columns,
                              policy.rows, None, None, worker_identity(), ranks=ranks)
        targets = np.asarray(group[fields[-1].stored_name][()])
    return PartStaged(job.index, list(policy.names or []), policy.columns, policy.rows,
                      hashes, targets, worker_identity())


#: The staging file's group of a lean part's row hashes, ranked (:attr:`PartJob.lean`).
RANKS = "ranks"


def _keep_ranks(stage: Any, hashes: Any) -> Any:
    """Rank a lean part's hashes, keep them in its staging file, and return what the
    coordinator needs of them: the distinct hashes and their counts."""
    from datastack.rowids import PartRanks, rank_part

    ranks = rank_part(hashes)
    group = stage.create_group(RANKS)
    group.create_dataset("hashes", data=hashes)
    for name, values in ranks._asdict().items():
        if values is not None:
            group.create_dataset(name, data=values)
    return PartRanks(ranks.distinct, ranks.counts, None, None)


def _kept_ids(stage: Any, earlier: Any) -> Any:
    """The ids of a lean part's rows, from the ranks its stage kept and ``earlier`` (the
    copies of each distinct hash in the parts before, from the coordinator)."""
    from datastack.rowids import PartRanks, part_ids

    group = stage[RANKS]
    kept = {name: np.asarray(group[name][()]) if name in group else None
            for name in PartRanks._fields}
    ranks = PartRanks(**kept)  # type: ignore[arg-type]  # as _keep_ranks stored them
    return part_ids(np.asarray(group["hashes"][()]), ranks, earlier)


def named_error(exc: BaseException, where: str) -> BaseException:
    """A part's error, naming the part (the refresh's reason says which bytes failed)."""
    from datastack.errors import DatastackError, FormatError

    if isinstance(exc, DatastackError):
        return type(exc)(f"{where}: {exc}")
    return FormatError(f"{where}: {type(exc).__name__}: {exc}")


@dataclass(frozen=True)
class PartWrite:
    """Phase 2 of a part: the final fields and codes, and this part's rows of each split."""

    job: PartJob
    fields: list[Any]
    transforms: dict[str, Any]
    encodings: dict[str, list[str]]
    features: list[str] | None
    target: str
    splits: Any  # this part's rows of each split (SplitRows, or split -> row indices)
    ids: Any  # uint64 row id of each of the part's rows (None without splits, or lean)
    identity: str
    shard_bytes: int
    compression: str
    skipped: tuple[str, ...] = ()  # a folder's part: the files its stage found bad
    #: A lean part (:attr:`PartJob.lean`): the copies of each of its distinct hashes in the
    #: parts before it (None: none), from which the worker numbers its rows.
    earlier: Any = None


@dataclass(frozen=True)
class SplitRows:
    """A part's rows of each split as one byte a row (the split's number; 255: in none):
    an eighth of the indices to send to a worker."""

    names: tuple[str, ...]
    codes: Any  # uint8, one per row

    @classmethod
    def of(cls, splits: dict[str, Any], rows: int) -> Any:
        """``splits`` (split -> ascending row indices) packed (as they are: > 255 splits)."""
        if len(splits) > 255:
            return splits
        codes = np.full(rows, 255, np.uint8)
        for number, indices in enumerate(splits.values()):
            codes[np.asarray(indices, np.int64)] = number
        return cls(tuple(splits), codes)

    def items(self) -> list[tuple[str, Any]]:
        """``(split, ascending row indices)`` in the splits' order (empty ones too)."""
        return [(name, np.flatnonzero(self.codes == number))
                for number, name in enumerate(self.names)]


def write_part(task: PartWrite) -> dict[str, Any]:
    """Phase 2 (see the module docstring): ``{"shards": entries, "schema": ..., "worker"}``."""
    from datastack.pipeline._malloc import roomy_malloc

    with roomy_malloc():
        return _write_part(task)


def _write_part(task: PartWrite) -> dict[str, Any]:
    from datastack.canonical.layout import shard_identifier
    from datastack.canonical.shards import shard_entry
    from datastack.store import Store

    job = task.job
    with _columns(task) as (columns, ids):
        schema, shards = _write_splits(task, columns, ids)
    store = Store.open(job.storage)
    worker = worker_identity()
    entries = []
    for shard in shards:
        identifier = shard_identifier(job.spec.name, shard.sha256)
        if not store.storage.has_resource(identifier):  # moved in where it can be
            store.storage.adopt_file(identifier, shard.path, sha256=shard.sha256)
        entries.append({**shard_entry(shard, identifier), "part": job.part.describe(),
                        "worker": worker})
        Path(shard.path).unlink(missing_ok=True)
    job.stage_path.unlink(missing_ok=True)
    return {"shards": entries, "schema": schema, "worker": worker}


@contextlib.contextmanager
def _columns(task: PartWrite) -> Iterator[tuple[dict[str, Any], Any]]:
    """The part's rows to write and their ids: its staging file's (staged again when it is
    gone: another machine, or a dead worker's folder), or a folder part's files read
    again."""
    import h5py

    from datastack.canonical.columns import StagedRows

    job = task.job
    if job.part.kind == "members":
        from datastack.pipeline._part_folders import folder_columns

        with folder_columns(job, list(task.skipped)) as columns:
            yield columns, task.ids
        return
    if not job.stage_path.exists():
        stage_part(job)
    with h5py.File(job.stage_path, "r") as stage:
        group = stage["rows"]
        ids = _kept_ids(stage, task.earlier) if job.lean and RANKS in stage else task.ids
        yield {f.name: StagedRows(group[f.stored_name], f) if f.variable
               else group[f.stored_name] for f in task.fields}, ids


def _write_splits(task: PartWrite, columns: dict[str, Any], ids: Any
                  ) -> tuple[dict[str, Any], list[Any]]:
    """The part's rows of each split in canonical files cut into shards (not stored yet)."""
    from datastack.canonical.rowids import write_row_ids
    from datastack.canonical.shards import cut_shards
    from datastack.canonical.writer import CanonicalWriter

    job = task.job
    schema: dict[str, Any] = {}
    shards: list[Any] = []
    for number, (split, indices) in enumerate(task.splits.items()):
        # a file per split: one that fits a shard is its own shard (no second copy)
        out = Path(job.scratch) / f"part-{job.index:06d}-{number}.h5"
        with CanonicalWriter(out, job.spec.name, task.compression) as writer:
            rows = np.asarray(indices, np.int64)
            writer.add_fields(split, task.fields, columns, rows, task.transforms)
            if ids is not None:
                write_row_ids(writer.group(split), ids[rows], task.identity)
            prepared = writer.prepared(task.features, task.target, task.encodings)
        schema = {**prepared.schema, "splits": {**schema.get("splits", {}),
                                                **prepared.schema["splits"]}}
        if number == 0:
            _maybe_die(job)
        shards += cut_shards(out, Path(job.scratch) / f"shards-{job.index:06d}-{number}",
                             task.shard_bytes)
        out.unlink(missing_ok=True)
    return schema, shards


def _maybe_die(job: PartJob) -> None:
    """The test hook of :data:`KILL_PART_ENV` (``"<part index>:<marker file>"``): the worker
    SIGKILLs itself once, after writing the part's file, before its shards are stored."""
    hook = job.kill
    if not hook:
        return
    index, marker = hook.split(":", 1)
    if int(index) == job.index and not os.path.exists(marker):
        Path(marker).write_text(str(os.getpid()))
        os.kill(os.getpid(), 9)


__all__ = ["KILL_PART_ENV", "PartJob", "PartStaged", "PartWrite", "ScanJob", "SplitRows",
           "named_error", "scan_part_range", "stage_part", "worker_identity", "write_part"]
