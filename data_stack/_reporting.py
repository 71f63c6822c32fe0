"""The original iterator reports, measured with :func:`datastack.iterators.report`.

The report keeps the original fields (identifier, name, tag, positions from the iterator's
``dataset_meta``; target distribution; speed; sub-reports of ``underlying_iterators``).
Differences: the speed is datastack's (``speed_samples`` random single reads, instead of full
passes for at least 10 seconds), and iterators without ``dataset_meta`` are reported with
default positions instead of failing.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections import Counter
from dataclasses import dataclass
from enum import Enum
from typing import Any

import numpy as np

from data_stack._meta import DatasetMeta
from datastack import iterators as _ds

DEFAULT_SPEED_SAMPLES = 1000


@dataclass
class DatasetIteratorReport:
    identifier: str | None
    name: str | None
    tag: str | None
    length: int
    sample_pos: int
    target_pos: int
    tag_pos: int
    target_dist: dict[Any, int]
    iteration_speed: float
    sub_reports: list[DatasetIteratorReport]


def _plain(value: Any) -> Any:
    """A hashable plain-Python key for a target (numpy scalars and rows included)."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    return tuple(value) if isinstance(value, list) else value


def _target_distribution(iterator: Any, target_pos: int) -> dict[Any, int]:
    if isinstance(iterator, _ds.DatasetIterator):
        targets: Any = iterator.get_targets(target_pos)
    else:
        targets = [row[target_pos] for row in iterator]
    counts = Counter(_plain(t) for t in targets)
    try:
        return dict(sorted(counts.items()))
    except TypeError:  # mixed, unorderable labels
        return dict(counts)


class DatasetIteratorReportGenerator:
    """Generates :class:`DatasetIteratorReport` trees."""

    class ReportFormat(Enum):
        DATA_CLASS = "data_class"
        YAML = "yaml"
        JSON = "json"
        DICT = "dict"

    @staticmethod
    def generate_report(
        iterator: Any,
        report_format: ReportFormat = ReportFormat.DATA_CLASS,
        speed_samples: int = DEFAULT_SPEED_SAMPLES,
    ) -> Any:
        """Report on ``iterator`` and, recursively, its ``underlying_iterators``."""
        generator = DatasetIteratorReportGenerator
        subs = [
            generator.generate_report(sub, speed_samples=speed_samples)
            for sub in getattr(iterator, "underlying_iterators", [])
        ]
        meta = getattr(iterator, "dataset_meta", None) or DatasetMeta()
        report = DatasetIteratorReport(
            meta.identifier,
            meta.dataset_name,
            meta.dataset_tag,
            len(iterator),
            meta.sample_pos,
            meta.target_pos,
            meta.tag_pos,
            _target_distribution(iterator, meta.target_pos),
            generator.measure_iteration_speed(iterator, speed_samples),
            subs,
        )
        if report_format == generator.ReportFormat.JSON:
            return generator._to_json(report)
        if report_format == generator.ReportFormat.YAML:
            return generator._to_yaml(report)
        if report_format == generator.ReportFormat.DICT:
            return generator._to_dict(report)
        return report

    @staticmethod
    def measure_iteration_speed(iterator: Any, speed_samples: int = DEFAULT_SPEED_SAMPLES) -> float:
        """Samples per second over ``speed_samples`` random reads (0.0 for an empty iterator)."""
        if isinstance(iterator, _ds.DatasetIterator):
            rep = _ds.report(iterator, speed_samples=speed_samples, max_depth=0)
            return float(rep.samples_per_second or 0.0)
        start = time.perf_counter()
        count = sum(1 for _ in iterator)
        elapsed = time.perf_counter() - start
        return count / elapsed if elapsed > 0 else 0.0

    @staticmethod
    def _to_dict(report: DatasetIteratorReport) -> dict[str, Any]:
        return dataclasses.asdict(report)

    @staticmethod
    def _to_json(report: DatasetIteratorReport) -> str:
        return json.dumps(DatasetIteratorReportGenerator._to_dict(report), sort_keys=True, indent=4)

    @staticmethod
    def _to_yaml(report: DatasetIteratorReport) -> str:
        import yaml

        data = DatasetIteratorReportGenerator._to_dict(report)
        return str(yaml.safe_dump(data, sort_keys=True, indent=4))


__all__ = ["DatasetIteratorReport", "DatasetIteratorReportGenerator"]
