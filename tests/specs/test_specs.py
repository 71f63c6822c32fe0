"""Spec parsing and validation: every rejection names the file, the dataset and the key."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from datastack.errors import SpecError
from datastack.specs import DatasetSpec, load_spec, parse_spec, validate_cron

SHA = "a" * 64
MD5 = "b" * 32


def doc(**fields: object) -> dict[str, object]:
    """A one-dataset document named 'ds', valid unless ``fields`` break it."""
    base: dict[str, object] = {
        "sources": [{"url": "https://example.org/x.csv", "sha256": SHA}],
        "format": "csv",
    }
    base.update(fields)
    return {"datasets": {"ds": {k: v for k, v in base.items() if v is not ...}}}


def parse(**fields: object) -> DatasetSpec:
    return parse_spec(doc(**fields), "spec.yaml")["ds"]


def rejects(key: str, pattern: str, **fields: object) -> SpecError:
    with pytest.raises(SpecError) as info:
        parse(**fields)
    message = str(info.value)
    assert message.startswith("spec.yaml: dataset 'ds'"), message
    assert f"key {key!r}" in message, message
    assert re.search(pattern, message), message
    assert info.value.dataset == "ds" and info.value.key == key  # type: ignore[attr-defined]
    return info.value


def test_full_example_parses(tmp_path: Path) -> None:
    path = tmp_path / "datasets.yaml"
    path.write_text(
        f"""
datasets:
  iris:
    description: Fisher's iris
    sources:
      - url: https://example.org/iris.csv
        sha256: {SHA.upper()}
    format: csv
    csv: {{header: true, skip_rows: 1, target: species, delimiter: ";"}}
    splits: {{train: 0.8, test: 0.2}}
    stratify: true
    seed: 3
    schedule: "0 3 * * *"
  arrays:
    sources:
      - {{url: "file:///data/x.npy", md5: {MD5}, role: samples}}
      - {{url: "file:///data/y.npy", md5: {MD5}, role: targets}}
    format: npy
  mnist-h5:
    sources: [{{url: "https://example.org/mnist.h5", sha256: {SHA}}}]
    format: hdf5
    hdf5: {{samples: images, targets: labels}}
  custom-thing:
    sources: [{{url: "data/raw.bin", sha256: {SHA}}}]
    preprocessor: mypkg.module:MyPreprocessor
    extra: {{anything: [1, 2]}}
"""
    )
    specs = load_spec(path)
    iris = specs["iris"]
    assert iris.sources[0].sha256 == SHA and iris.sources[0].filename == "iris.csv"
    assert iris.csv.delimiter == ";" and iris.csv.skip_rows == 1 and iris.csv.target == "species"
    assert iris.splits == {"train": 0.8, "test": 0.2} and iris.stratify and iris.seed == 3
    assert iris.schedule == "0 3 * * *" and iris.origin == str(path)
    assert [s.role for s in specs["arrays"].sources] == ["samples", "targets"]
    assert specs["mnist-h5"].hdf5.samples == "images" and specs["mnist-h5"].hdf5.targets == "labels"
    custom = specs["custom-thing"]
    assert custom.format is None and custom.preprocessor == "mypkg.module:MyPreprocessor"
    assert custom.sources[0].url == (tmp_path / "data" / "raw.bin").as_uri()
    assert custom.extra == {"anything": [1, 2]}


def test_defaults() -> None:
    spec = parse()
    assert spec.splits is None and spec.seed == 0 and not spec.stratify and spec.schedule is None
    assert spec.csv.header is True and spec.csv.target is None and spec.csv.delimiter == ","
    assert spec.sources[0].compression is None


@pytest.mark.parametrize(
    ("filename", "kind"),
    [
        ("a.csv.gz", "gzip"),
        ("a.tar.gz", "tar"),
        ("a.tgz", "tar"),
        ("a.zip", "zip"),
        ("a.tar", "tar"),
    ],
)
def test_compression_detected_from_suffix(filename: str, kind: str) -> None:
    spec = parse(sources=[{"url": f"https://e.org/{filename}", "md5": MD5}])
    assert spec.sources[0].compression == kind


def test_relative_paths_resolve_against_spec_folder(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "s.yaml"
    path.write_text(
        "datasets:\n  a:\n    format: csv\n    sources:\n"
        f"      - {{url: 'file:data/a.csv', md5: {MD5}}}\n"
        f"      - {{url: '../b.csv', md5: {MD5}}}\n"
    )
    sources = load_spec(path)["a"].sources
    assert sources[0].url == (tmp_path / "sub" / "data" / "a.csv").as_uri()
    assert sources[1].url == (tmp_path / "b.csv").as_uri()


def test_unknown_keys_suggest_the_closest() -> None:
    rejects("formt", r"did you mean 'format'", formt="csv")
    rejects("csv.delimeter", r"did you mean 'delimiter'", csv={"delimeter": ";"})
    rejects(
        "sources[0].sha265",
        r"did you mean 'sha256'",
        sources=[{"url": "https://e.org/x", "sha265": SHA}],
    )
    with pytest.raises(SpecError, match=r"key 'dataset'.*did you mean 'datasets'"):
        parse_spec({"dataset": {}}, "spec.yaml")


@pytest.mark.parametrize("name", ["Iris", "../x", "-a", "a b", "a/b", "con", "x" * 200, "a..b"])
def test_bad_names(name: str) -> None:
    with pytest.raises(SpecError, match=r"invalid dataset name"):
        parse_spec({"datasets": {name: doc()["datasets"]["ds"]}}, "spec.yaml")  # type: ignore[index]


def test_checksums() -> None:
    rejects("sources[0].sha256", "missing checksum", sources=[{"url": "https://e.org/x"}])
    rejects(
        "sources[0].sha256",
        "expected 64 hex characters, got 63",
        sources=[{"url": "https://e.org/x", "sha256": "a" * 63}],
    )
    rejects(
        "sources[0].md5",
        "expected 32 hex characters",
        sources=[{"url": "https://e.org/x", "md5": "g" * 32}],
    )
    rejects(
        "sources[0].sha256", "expected 64 hex", sources=[{"url": "https://e.org/x", "sha256": 5}]
    )
    both = parse(sources=[{"url": "https://e.org/x", "sha256": SHA, "md5": MD5}])
    assert both.sources[0].checksum == ("sha256", SHA)


@pytest.mark.parametrize(
    "url", ["ftp://e.org/x.csv", "gopher://e.org/x", "data:text/plain,abc", "javascript:alert(1)"]
)
def test_bad_schemes(url: str) -> None:
    rejects("sources[0].url", "unsupported URL scheme", sources=[{"url": url, "sha256": SHA}])


@pytest.mark.parametrize("url", ["file://evil.host/etc/passwd", "file://./data/x.csv"])
def test_file_urls_with_a_host(url: str) -> None:
    rejects("sources[0].url", "names a host", sources=[{"url": url, "sha256": SHA}])


def test_other_url_problems() -> None:
    rejects("sources[0].url", "no host", sources=[{"url": "https:///x", "sha256": SHA}])
    rejects(
        "sources[0].url",
        "control characters",
        sources=[{"url": "https://e.org/\x00", "sha256": SHA}],
    )
    rejects("sources[0].url", "missing", sources=[{"sha256": SHA}])
    rejects("sources", "non-empty list", sources=[])
    rejects("sources[0]", "expected a mapping", sources=["https://e.org/x"])
    rejects(
        "sources[0].filename",
        "not a usable file name",
        sources=[{"url": "https://e.org/", "sha256": SHA}],
    )
    rejects(
        "sources",
        "share a filename",
        sources=[
            {"url": "https://a.org/x.csv", "sha256": SHA},
            {"url": "https://b.org/x.csv", "sha256": SHA},
        ],
    )


@pytest.mark.parametrize(
    ("splits", "key", "reason"),
    [
        ({"train": 0.8, "test": 0.1}, "splits", "sum to 1, got 0.9"),
        ({"train": 0.9, "test": 0.2}, "splits", "sum to 1"),
        ({"train": 1.2, "test": -0.2}, "splits.train", r"ratio in \(0, 1\]"),
        ({"train": 0.5, "test": -0.5}, "splits.test", r"ratio in \(0, 1\]"),
        ({"train": "half", "test": 0.5}, "splits.train", "expected a number"),
        ({}, "splits", "at least one split"),
        ({"train": float("nan")}, "splits.train", "expected a number"),
    ],
)
def test_bad_splits(splits: dict[str, object], key: str, reason: str) -> None:
    rejects(key, reason, splits=splits)


def test_split_tolerance_and_names() -> None:
    assert parse(splits={"a": 1 / 3, "b": 1 / 3, "c": 1 / 3}).splits is not None
    rejects("splits.a b", "invalid split name", splits={"a b": 0.5, "c": 0.5})
    rejects("stratify", "needs splits", stratify=True)


def test_formats_and_roles() -> None:
    rejects("format", "unknown format 'feather'", format="feather")  # parquet is a format now
    rejects("format", "missing", format=...)
    rejects(
        "sources",
        "need role: samples",
        format="npy",
        sources=[{"url": "https://e.org/x.npy", "sha256": SHA}] * 1
        + [{"url": "https://e.org/y.npy", "sha256": SHA}],
    )
    rejects(
        "sources[0].role",
        "expected one of samples, targets",
        sources=[{"url": "https://e.org/x.npy", "sha256": SHA, "role": "labels"}],
    )
    ok = parse(
        format="npy", sources=[{"url": "https://e.org/x.npy", "sha256": SHA, "role": "samples"}]
    )
    assert ok.sources[0].role == "samples"


def test_source_splits() -> None:
    src = [
        {"url": "https://e.org/a.idx", "md5": MD5, "split": "train"},
        {"url": "https://e.org/b.idx", "md5": MD5, "split": "test"},
    ]
    assert [s.split for s in parse(format="idx", sources=src).sources] == ["train", "test"]
    rejects("splits", "already name their splits", format="idx", sources=src, splits={"a": 1})
    rejects(
        "sources",
        "every source names its split or none",
        format="idx",
        sources=[src[0], {"url": "https://e.org/c.idx", "md5": MD5}],
    )


@pytest.mark.parametrize(
    "cron",
    [
        "0 3 * * *",
        "*/15 * * * *",
        "0 0 1,15 * mon-fri",
        "5 4 * jan,jul sun",
        "0-30/10 8-18 * * 1-5",
        "@daily",
        "0 0 * * 7",
        "59 23 31 12 6",
        "0 0 L * *",  # L and # are accepted, as by Prefect
        "0 0 1,L * *",
        "0 9 * * mon#2",
        "0 9 * * 1#1,5#3",
        "0 0 29 2 *",  # fires in leap years
        "0 0 31 2,3 *",  # fires in March
    ],
)
def test_good_cron(cron: str) -> None:
    assert parse(schedule=cron).schedule == cron
    assert validate_cron(cron) == cron


def test_every_accepted_schedule_is_one_prefect_accepts_and_cronsim_can_time() -> None:
    """Both engines see the schedule: Prefect schedules it, cronsim computes "overdue"."""
    import datetime as dt

    from datastack._cron import fire_times

    validators = pytest.importorskip("prefect._internal.schemas.validators")
    for cron in ["0 0 L * *", "0 0 1,L * *", "0 9 * * mon#2", "0 9 * * 1#1,5#3", "0 0 29 2 *",
                 "0 0 31 2,3 *", "*/15 * * * *", "@daily"]:
        validate_cron(cron)
        assert validators.validate_cron_string(cron) == cron
        assert len(fire_times(cron, dt.datetime(2026, 1, 1, tzinfo=dt.UTC), 2)) == 2


@pytest.mark.parametrize(
    ("cron", "reason"),
    [
        ("* * * *", "expected 5 fields"),
        ("0 0 0 * * *", "expected 5 fields"),
        ("61 * * * *", "minute: 61 is out of range 0-59"),
        ("* 24 * * *", "hour: 24 is out of range"),
        ("* * 0 * *", "day of month: 0 is out of range 1-31"),
        ("* * * 13 *", "month: 13"),
        ("* * * * 8", "day of week: 8"),
        ("*/0 * * * *", "step"),
        ("10-5 * * * *", "backwards"),
        ("* * * foo *", "not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("? * * * *", "not a number"),
        ("@sometimes", "expected 5 fields"),
        ("", "expected 5 fields"),
        ("0 0 31 2 *", "never fire"),  # valid fields that never fire
        ("0 0 30 feb *", "never fire"),
        ("0 12 31 4,6,9,11 *", "never fire"),
        ("0 0 L5 * *", "day of month: 'L5' is not supported"),
        ("0 0 LW * *", "day of month: 'LW' is not supported"),
        ("0 0 15W * *", "day of month: '15W' is not supported"),
        ("30 2 * * 5L", "day of week: '5L' is not supported"),
        ("0 0 * * mon#6", "day of week: 'mon#6' is not supported"),
        ("0 0 * * 9#2", "day of week: 9 is out of range"),
    ],
)
def test_bad_cron(cron: str, reason: str) -> None:
    error = rejects("schedule", "invalid cron expression", schedule=cron)
    assert reason in str(error)


def test_schedule_must_be_a_string() -> None:
    rejects("schedule", "expected a string", schedule=5)


@pytest.mark.parametrize("ref", ["mypkg", "mypkg:", ":attr", "my pkg:X", "a.b:c d", "a:b:c", 5])
def test_bad_preprocessor(ref: object) -> None:
    rejects("preprocessor", "expected 'module.path:attr'", preprocessor=ref)


def test_csv_block() -> None:
    rejects("csv.header", "true or false", csv={"header": "yes"})
    rejects("csv.skip_rows", "integer >= 0", csv={"skip_rows": -1})
    rejects("csv.delimiter", "one separator character", csv={"delimiter": ",,"})
    rejects("csv.target", "header is false", csv={"header": False, "target": "y"})
    rejects("csv.target", "column name or index", csv={"target": [1]})
    rejects("csv.encoding", "unknown text encoding", csv={"encoding": "klingon"})
    rejects("csv.categorical", "list of column", csv={"categorical": "a"})
    assert parse(csv={"header": False, "target": 0}).csv.target == 0


def test_misc_types() -> None:
    rejects("seed", "integer", seed="x")
    rejects("seed", "integer", seed=True)
    rejects("stratify", "true or false", stratify="yes", splits={"a": 1})
    rejects("extra", "mapping", extra=[1])
    rejects("hdf5.sample", "did you mean 'samples'", format="hdf5", hdf5={"sample": "x"})
    with pytest.raises(SpecError, match=r"key 'datasets': missing"):
        parse_spec({}, "spec.yaml")
    with pytest.raises(SpecError, match=r"dataset 'ds': key 'sources': missing"):
        parse_spec({"datasets": {"ds": None}}, "spec.yaml")


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match=r"missing\.yaml: cannot read spec file"):
        load_spec(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("datasets: {a: [}\n")
    with pytest.raises(SpecError, match=r"bad\.yaml: invalid YAML"):
        load_spec(bad)
    hostile = tmp_path / "hostile.yaml"
    hostile.write_text("datasets: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(SpecError, match="invalid YAML"):
        load_spec(hostile)
    wrong = tmp_path / "wrong.yaml"
    wrong.write_text(
        f"datasets:\n  ds:\n    format: csv\n    sources: [{{url: 'ftp://x/y', md5: {MD5}}}]\n"
    )
    with pytest.raises(
        SpecError, match=rf"^{re.escape(str(wrong))}: dataset 'ds': key 'sources\[0\]\.url'"
    ):
        load_spec(wrong)


def test_fingerprint_is_stable_and_meaningful() -> None:
    base = parse(splits={"train": 0.8, "test": 0.2})
    assert base.fingerprint() == parse(splits={"train": 0.8, "test": 0.2}).fingerprint()
    # Cosmetic changes and mirrors with the same checksum keep the fingerprint.
    assert (
        parse(
            splits={"train": 0.8, "test": 0.2}, description="x", schedule="0 1 * * *"
        ).fingerprint()
        == base.fingerprint()
    )
    moved = parse(
        splits={"train": 0.8, "test": 0.2},
        sources=[{"url": "https://mirror.org/x.csv", "sha256": SHA}],
    )
    assert moved.fingerprint() == base.fingerprint()
    # Anything that changes the data changes it.
    for changed in (
        parse(splits={"train": 0.7, "test": 0.3}),
        parse(splits={"train": 0.8, "test": 0.2}, seed=1),
        parse(splits={"train": 0.8, "test": 0.2}, csv={"target": 0}),
        parse(
            splits={"train": 0.8, "test": 0.2},
            sources=[{"url": "https://example.org/x.csv", "sha256": "c" * 64}],
        ),
    ):
        assert changed.fingerprint() != base.fingerprint()
    # Known value: guards against accidental changes of the normalisation.
    again = yaml.safe_load(yaml.safe_dump(doc(splits={"train": 0.8, "test": 0.2})))
    assert parse_spec(again, "other.yaml")["ds"].fingerprint() == base.fingerprint()


def test_compression_key_validated_and_fingerprinted_only_when_set() -> None:
    base = parse(splits={"train": 0.8, "test": 0.2})
    assert base.compression == "none"
    # Same value as before the key existed: a default spec keeps its published versions.
    assert base.fingerprint() == (
        "60f53f87e61c8d733714e80b333b36425cf136a01bb2334c2abc1b27f47a4161"
    )
    explicit = parse(splits={"train": 0.8, "test": 0.2}, compression="none")
    assert explicit.fingerprint() == base.fingerprint()
    lzf = parse(splits={"train": 0.8, "test": 0.2}, compression="lzf")
    gzip = parse(splits={"train": 0.8, "test": 0.2}, compression="gzip")
    assert lzf.compression == "lzf" and gzip.compression == "gzip"
    assert len({base.fingerprint(), lzf.fingerprint(), gzip.fingerprint()}) == 3
    for bad, shown in (("zstd", "'zstd'"), (None, "null"), (True, "True"), ("LZF", "'LZF'")):
        rejects("compression", rf"expected one of none, lzf, gzip, got {shown}", compression=bad)


def test_text_and_path_inputs(tmp_path: Path) -> None:
    text = (
        "datasets:\n  a:\n    format: csv\n"
        f"    sources: [{{url: 'https://e.org/a.csv', md5: {MD5}}}]\n"
    )
    assert load_spec(text)["a"].origin == "<string>"
    path = tmp_path / "s.yml"
    path.write_text(text)
    assert load_spec(str(path))["a"].origin == str(path)
