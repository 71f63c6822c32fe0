"""data_stack.dataset.reporting through the shim (speed measured by datastack's report)."""

from __future__ import annotations

import json

import pytest
import yaml

from data_stack.dataset.factory import InformedDatasetFactory
from data_stack.dataset.iterator import SequenceDatasetIterator
from data_stack.dataset.meta import MetaFactory
from data_stack.dataset.reporting import DatasetIteratorReport, DatasetIteratorReportGenerator

Gen = DatasetIteratorReportGenerator


@pytest.fixture
def informed():
    targets = [j for _ in range(3) for j in range(4)] + [9] * 8
    iterator = SequenceDatasetIterator([[0] * len(targets), targets])
    meta = MetaFactory.get_dataset_meta(
        identifier="id_1", dataset_name="toy", dataset_tag="train",
        iterator_meta=MetaFactory.get_iterator_meta(sample_pos=0, target_pos=1, tag_pos=2),
    )
    return InformedDatasetFactory.get_dataset_iterator(iterator, meta)


def test_plain_report(informed):
    report = Gen.generate_report(informed, speed_samples=50)
    assert isinstance(report, DatasetIteratorReport)
    assert (report.identifier, report.name, report.tag) == ("id_1", "toy", "train")
    assert report.length == 20 and report.sub_reports == []
    assert report.target_dist == {0: 3, 1: 3, 2: 3, 3: 3, 9: 8}
    assert (report.sample_pos, report.target_pos, report.tag_pos) == (0, 1, 2)
    assert report.iteration_speed > 0


def test_combined_report_and_formats(informed):
    meta = MetaFactory.get_dataset_meta_from_existing(informed.dataset_meta, dataset_tag="full")
    combined = InformedDatasetFactory.get_combined_dataset_iterator([informed, informed], meta)
    report = Gen.generate_report(combined, speed_samples=10)
    assert report.length == 40 and report.tag == "full" and report.name == "toy"
    assert [r.length for r in report.sub_reports] == [20, 20]
    assert all(not r.sub_reports for r in report.sub_reports)
    as_dict = Gen.generate_report(combined, Gen.ReportFormat.DICT, speed_samples=10)
    assert as_dict["length"] == 40 and len(as_dict["sub_reports"]) == 2
    assert json.loads(Gen.generate_report(informed, Gen.ReportFormat.JSON, 10))["length"] == 20
    as_yaml = Gen.generate_report(informed, Gen.ReportFormat.YAML, 10)
    assert yaml.safe_load(as_yaml)["tag"] == "train"


def test_iterators_without_meta_are_reported_with_default_positions():
    plain = SequenceDatasetIterator([[1, 2, 3], ["x", "y", "x"]])
    report = Gen.generate_report(plain[0:2], speed_samples=5)
    assert report.identifier is None and report.target_dist == {"x": 1, "y": 1}
    assert report.sub_reports[0].length == 3
