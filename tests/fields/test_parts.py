"""One raw input cut into parts (#25.1, ``datastack/formats/_parts.py``): the parts' rows, read
one after another, are the whole input's rows, at every cut position -- CSV with quoted
newlines, doubled quotes, CRLF, blank lines and no final newline (checked against Python's
``csv`` and through the project's CSV reader on a real table), JSON Lines, Parquet row groups,
the files of a folder's tar -- and scans of ranges made separately (as workers would) assemble
into the same parts."""

from __future__ import annotations

import csv
import io
import itertools
import json
import pickle
import random
import tarfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from datastack.formats import _parts
from datastack.formats._parts import (
    Part,
    assemble,
    csv_header_end,
    cut_parts,
    open_part,
    ranges,
    scan_range,
    text_plan,
)
from datastack.formats.csv import FORMAT as CSV
from datastack.formats.csv import CsvOptions
from datastack.formats.inputs import RawInput
from datastack.formats.jsonl import JSONL_FORMAT
from datastack.formats.tables import read_table
from datastack.resources import StreamedResource
from tests.fields.realdata import penguins_csv

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")


def _res(data: bytes, name: str = "t.csv") -> StreamedResource:
    return StreamedResource.from_bytes(name, data)


def _record_starts(data: bytes, encoding: str = "utf-8") -> tuple[list[list[str]], set[int]]:
    """Python's ``csv`` over the whole file: its records (empty lines included, as ``[]``) and
    the byte offsets where each begins (and the end of the file)."""
    stream = io.BytesIO(data)
    consumed = [0]

    def lines() -> Any:
        while line := stream.readline():
            consumed[0] += len(line)
            yield line.decode(encoding)

    reader = csv.reader(lines(), strict=True)
    records, starts = [], set()
    while True:
        here = consumed[0]
        try:
            records.append(next(reader))
        except StopIteration:
            break
        starts.add(here)
    return records, starts | {len(data)}


def _csv_records(data: bytes, skip: int = 1) -> list[list[str]]:
    """The non-empty records after the first ``skip`` (skipped rows and the header)."""
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"), newline=""), strict=True))[skip:]
    return [r for r in rows if r and r != [""]]


def _check_cover(parts: list[Part], head: int, size: int) -> None:
    assert parts[0].start == head and parts[-1].end == size
    for before, after in itertools.pairwise(parts):
        assert before.end == after.start and before.start < before.end  # no gap, no overlap


def _check_csv_parts(data: bytes, parts: list[Part], header_end: int) -> None:
    _, starts = _record_starts(data)
    _check_cover(parts, header_end, len(data))
    assert all(p.start in starts for p in parts)  # every part starts where a record starts
    pieces = [_csv_records(open_part(_res(data), p).read()) for p in parts]
    assert [r for piece in pieces for r in piece] == _csv_records(data)
    assert all(pieces[1:])  # every part after the first holds a record


FIELD = st.text(alphabet=st.sampled_from(list('ab,"\n é')), max_size=6) | st.sampled_from(
    ["", '""', "x\r\ny", "1.5", '"', "\n"])


@st.composite
def csv_files(draw: Any) -> bytes:
    columns = draw(st.integers(2, 3))
    rows = draw(st.lists(st.lists(FIELD, min_size=columns, max_size=columns), max_size=12))
    header = draw(st.sampled_from([["a", "b", "c"], ['x"y', "multi\nline", "c"]]))[:columns]
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=ending)
    writer.writerow(header)
    for row in rows:
        if draw(st.booleans()) and draw(st.booleans()):
            out.write(draw(st.sampled_from(["\n", "\r\n", "\n\n"])))  # empty lines
        writer.writerow(row)
        if draw(st.integers(0, 15)) == 0:
            out.write(f'5\'10",x{ending}')  # a quote in an unquoted field: a character
    text = out.getvalue()
    if draw(st.booleans()):
        text = text.rstrip("\r\n")  # no final newline
    return text.encode("utf-8")


SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(data=csv_files())
def test_csv_every_cut_position(data: bytes) -> None:
    """One cut at every byte (ranges scanned apart, assembled), and equal ranges of every
    ``target_bytes`` from 1 up: the parts' records are the file's, in order."""
    header_end = csv_header_end(_res(data), CsvOptions())
    with io.BytesIO(data) as stream:
        for cut in range(header_end + 1, len(data)):
            scans = [scan_range(stream, header_end, cut), scan_range(stream, cut, len(data))]
            cuts = assemble(scans, header_end)
            if cuts is None:  # quotes that do not all quote: one part, the whole file
                assert b"5'10\"" in data
                continue
            _check_csv_parts(data, [Part(0, "t.csv", "bytes", a, b, header_end)
                                    for a, b in cuts], header_end)
    for target in [*range(1, 12), 17, 40, 10**6]:
        parts = cut_parts(_res(data), "csv", CsvOptions(), target)
        if len(parts) == 1:  # one part: the whole file
            assert (parts[0].start, parts[0].end, parts[0].head) == (0, len(data), 0)
        else:
            _check_csv_parts(data, parts, header_end)


def test_each_range_starts_one_part() -> None:
    """Equal ranges of a table give as many parts as ranges, each about a range long: the
    first range's part starts at the header's end and runs to the next range's first record
    (no part of one row before it)."""
    rows = b"".join(b"%d,%s,%d\n" % (k, b"x" * (k % 7), k * k) for k in range(5_000))
    data = b"a,b,c\n" + rows
    plan = text_plan(_res(data), "csv", CsvOptions())
    assert plan is not None
    spans = ranges(plan.head, len(data), len(data) // 8, multiple=2)
    cuts = assemble([plan.scan(io.BytesIO(data), lo, hi) for lo, hi in spans], plan.head)
    assert cuts is not None and len(cuts) == len(spans) == 8
    assert cuts[0][0] == plan.head
    assert all(abs((b - a) - (hi - lo)) < 40 for (a, b), (lo, hi) in zip(cuts, spans,
                                                                        strict=True))
    _check_csv_parts(data, [Part(0, "t.csv", "bytes", a, b, plan.head) for a, b in cuts],
                     plan.head)


@SETTINGS
@given(data=csv_files(), block=st.integers(1, 9), seed=st.integers(0, 1000))
def test_scans_made_apart_assemble_like_one_process(data: bytes, block: int, seed: int) -> None:
    """Ranges scanned in any order, each from its own stream and in blocks of a few bytes
    (block boundaries everywhere), assemble into the parts of :func:`cut_parts`."""
    plan = text_plan(_res(data), "csv", CsvOptions())
    assert plan is not None
    header_end = plan.head
    spans = ranges(header_end, len(data), 5)
    order = list(range(len(spans)))
    random.Random(seed).shuffle(order)
    scans: dict[int, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_parts, "SCAN_BLOCK", block)
        for k in order:
            worker_plan = pickle.loads(pickle.dumps(plan))  # what a worker receives
            scans[k] = pickle.loads(pickle.dumps(worker_plan.scan(io.BytesIO(data), *spans[k])))
    cuts = assemble([scans[k] for k in range(len(spans))], header_end)
    parts = cut_parts(_res(data), "csv", CsvOptions(), 5)
    if cuts is None or len(cuts) < 2:
        assert len(parts) == 1
    else:
        assert [(p.start, p.end) for p in parts] == cuts


def test_quotes_that_do_not_quote_give_one_part() -> None:
    """``5'10"`` (a quote inside an unquoted field) breaks quote parity: one part, the whole
    file, read as before; quoted fields alone cut at every record."""
    rows = [f'{i},5\'{i}",x\n' for i in range(30)]
    data = ("id,height,y\n" + "".join(rows[:10]) + '10,"a\nb",y\n' + "".join(rows[10:])).encode()
    parts = cut_parts(_res(data), "csv", CsvOptions(), 16)
    assert [(p.start, p.end) for p in parts] == [(0, len(data))]
    assert open_part(_res(data), parts[0]).read() == data
    good = b"id,t,y\n" + b"".join(b'%d,"a ""q""\nb",x\n' % i for i in range(30))
    assert len(cut_parts(_res(good), "csv", CsvOptions(), 16)) == 30


def test_csv_options_skip_rows_delimiter_encoding() -> None:
    """``skip_rows`` (a skipped line with a lone quote), a quoted header, ``;`` and latin-1;
    UTF-16 is one part."""
    body = "".join(f'{i};"caf\xe9 {i}\nsuite";z\n' for i in range(20))
    data = ('# "note\n"h;1";"h\n2";y\n' + body).encode("latin-1")
    options = CsvOptions(skip_rows=1, delimiter=";", encoding="latin-1")
    parts = cut_parts(_res(data), "csv", options, 30)
    assert len(parts) > 10 and parts[0].head == len('# "note\n"h;1";"h\n2";y\n')
    whole = list(CSV.python_blocks(RawInput.from_resource(_res(data)), options))
    rows = [r for p in parts for b in CSV.python_blocks(
        RawInput.from_resource(open_part(_res(data), p)), options) for r in _rows(b)]
    assert rows == [r for b in whole for r in _rows(b)]
    wide = data.decode("latin-1").encode("utf-16")
    assert [(p.start, p.end) for p in cut_parts(
        _res(wide), "csv", CsvOptions(skip_rows=1, delimiter=";", encoding="utf-16"), 30)] == [
        (0, len(wide))]


def _rows(block: Any) -> list[tuple[Any, ...]]:
    columns = [c.to_pylist() if hasattr(c, "to_pylist") else list(c) for c in block.columns]
    return list(zip(*columns, strict=True))


def _reader_rows(fmt: Any, resource: StreamedResource, options: Any) -> list[tuple[Any, ...]]:
    return [r for b in fmt.blocks(RawInput.from_resource(resource), options) for r in _rows(b)]


@pytest.mark.parametrize("target", [1, 700, 4000])
def test_real_csv_through_the_project_reader(target: int) -> None:
    """Palmer penguins, and a table with multi-line quoted notes: each part read by the
    project's CSV reader (pyarrow's), rows concatenated, equal the whole file's; the typed
    table of the whole equals that of the parts' bytes joined."""
    penguins = penguins_csv().read_bytes()
    notes = io.StringIO()
    writer = csv.writer(notes, lineterminator="\r\n")
    writer.writerow(["x", "note", "label"])
    for i in range(200):
        writer.writerow([f"{i}.5", f'line one of {i}\nline "two",\r\n3', "abc"[i % 3]])
    for data in (penguins, notes.getvalue().encode()):
        raw = _res(data)
        parts = cut_parts(raw, "csv", CsvOptions(), target)
        assert len(parts) > (1 if target < 4000 else 0)
        got = [r for p in parts for r in _reader_rows(CSV, open_part(raw, p), CsvOptions())]
        assert got == _reader_rows(CSV, raw, CsvOptions())
    whole = read_table(CSV, RawInput.from_resource(_res(penguins)), CsvOptions())
    parts = cut_parts(_res(penguins), "csv", CsvOptions(), target)
    header = penguins[: parts[0].head]
    joined = header + b"".join(penguins[p.start : p.end] for p in parts)
    again = read_table(CSV, RawInput.from_resource(_res(joined)), CsvOptions())
    assert [len(c) for c in again.columns] == [len(c) for c in whole.columns]


JSON_VALUE = st.one_of(st.integers(-5, 5), st.text(alphabet=st.sampled_from(list('a"\n\\é{} ')),
                                                   max_size=5), st.none())


@SETTINGS
@given(records=st.lists(st.fixed_dictionaries({"k": JSON_VALUE, "v": JSON_VALUE}), max_size=10),
       blanks=st.lists(st.sampled_from(["", "\n", "  \n", "\r\n"]), min_size=10, max_size=10),
       final=st.booleans())
def test_jsonl_every_cut_position(records: list[dict[str, Any]], blanks: list[str],
                                  final: bool) -> None:
    text = "".join(blanks[i] + json.dumps(r, ensure_ascii=False) + "\n"
                   for i, r in enumerate(records))
    data = (text if final else text.rstrip("\n")).encode()

    def values(chunk: bytes) -> list[Any]:
        return [json.loads(line) for line in chunk.split(b"\n") if line.strip()]

    for target in range(1, len(data) + 2):
        parts = cut_parts(_res(data, "r.jsonl"), "jsonl", None, target)
        _check_cover(parts, 0, len(data))
        assert all(data[p.start - 1 : p.start] == b"\n" for p in parts[1:])
        pieces = [values(open_part(_res(data), p).read()) for p in parts]
        assert [v for piece in pieces for v in piece] == [r for r in records]
        assert all(pieces[1:])


def test_jsonl_through_the_project_reader() -> None:
    data = b"".join(json.dumps({"t": f"line\n{i} \u00e9", "y": i % 3, "z": None}).encode()
                    + b"\n" + b"\n" * (i % 2) for i in range(300))
    raw = _res(data, "r.jsonl")
    parts = cut_parts(raw, "jsonl", None, 500)
    assert len(parts) > 10
    got = [r for p in parts for r in _reader_rows(JSONL_FORMAT, open_part(raw, p), None)]
    assert got == _reader_rows(JSONL_FORMAT, raw, None)


def test_parquet_row_groups(tmp_path: Path) -> None:
    from datastack.formats.parquet import row_group_blocks

    table = pa.table({"x": list(range(1000)), "s": [f"v{i % 7}" for i in range(1000)]})
    path = tmp_path / "data.parquet"
    pq.write_table(table, path, row_group_size=37)
    raw = StreamedResource.from_path("datasets/d/raw/data.parquet", path)
    meta = pq.ParquetFile(path).metadata
    group = meta.row_group(0).column(0).total_compressed_size + meta.row_group(
        0).column(1).total_compressed_size
    parts = cut_parts(raw, "parquet", None, 3 * group)
    assert [p.kind for p in parts] == ["row_groups"] * len(parts) and len(parts) > 5
    assert parts[0].start == 0 and parts[-1].end == meta.num_row_groups
    assert all(a.end == b.start for a, b in itertools.pairwise(parts))
    rows, numbers = [], []
    for part in parts:
        for block in row_group_blocks(RawInput.from_resource(raw), part.start, part.end):
            rows += _rows(block)
            numbers += list(block.rows)
    assert rows == list(zip(table["x"].to_pylist(), table["s"].to_pylist(), strict=True))
    assert numbers == list(range(1, 1001))  # rows numbered in the file, for error messages
    assert parts[1].describe() == f"data.parquet row groups {parts[1].start}-{parts[1].end - 1}"
    with pytest.raises(ValueError, match="row_group_blocks"):
        open_part(raw, parts[0])


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf if m.isfile()]  # type: ignore[union-attr]


def test_folder_tar_members(tmp_path: Path) -> None:
    """A folder source's tar (long names: PAX headers) cut into files; each part is a tar of
    its files that the in-place reader lists; a plain tar opening with a global header and
    folders keeps them in every part; a compressed tar is one part."""
    from datastack.formats._tar_in_place import tar_spans
    from datastack.retrieval.folder import FolderTar

    root = tmp_path / "photos"
    for i in range(60):
        folder = root / ("cat" if i % 2 else "dog" + "g" * 120)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{i:03}.bin").write_bytes(bytes([i]) * (i * 37))
    data = FolderTar(root, "photos").read()
    raw = _res(data, "datasets/p/raw/photos.tar")
    parts = cut_parts(raw, "tar", None, 2000, name="photos/")
    assert len(parts) > 5 and {p.kind for p in parts} == {"members"}
    got = []
    for part in parts:
        piece = open_part(raw, part).read()
        (tmp_path / "part.tar").write_bytes(piece)
        spans = tar_spans(tmp_path / "part.tar")
        assert spans is not None and len(spans) == part.members[1] - part.members[0]  # type: ignore[index]
        got += _members(piece)
    assert got == _members(data)
    first, stop, a, b = parts[1].members  # type: ignore[misc]
    assert parts[1].describe() == f"photos/ files {first}-{stop - 1} ({a} .. {b})"

    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "made here"}) as tf:
        for name in ("d", "d/e"):
            info = tarfile.TarInfo(name)
            info.type = tarfile.DIRTYPE
            tf.addfile(info)
        for i in range(20):
            info = tarfile.TarInfo(f"d/e/{i}.txt")
            info.size = 700
            tf.addfile(info, io.BytesIO(b"%03d" % i * 233 + b"!"))
    parts = cut_parts(_res(plain.getvalue()), "tar", None, 3000)
    assert len(parts) == 10 and all(p.head == parts[1].head > 0 for p in parts[1:])
    pieces = [open_part(_res(plain.getvalue()), p).read() for p in parts]
    assert [m for piece in pieces for m in _members(piece)] == _members(plain.getvalue())
    with tarfile.open(fileobj=io.BytesIO(pieces[3]), mode="r:") as tf:
        assert tf.pax_headers.get("comment") == "made here"

    packed = io.BytesIO()
    with tarfile.open(fileobj=packed, mode="w:gz") as tf:
        tf.add(root, arcname="photos")
    whole = cut_parts(_res(packed.getvalue()), "tar", None, 100)
    assert [(p.kind, p.start, p.end) for p in whole] == [("bytes", 0, len(packed.getvalue()))]


def test_chunked_raw_copy_and_describe(tmp_path: Path) -> None:
    """A raw copy stored as chunks (``open_raw``) cuts like the bytes; parts pickle small and
    say what they are."""
    from datastack.storage import connect
    from datastack.storage.chunked import ChunkSink, open_raw

    data = b"id,t,y\n" + b"".join(b'%d,"two\r\nlines",%d\n' % (i, i % 2) for i in range(500))
    storage = connect(str(tmp_path / "store"))
    sink = ChunkSink(storage, lambda d: f"datasets/x/raw/chunks/{d}", chunk_bytes=1000)
    sink.set_resource("datasets/x/raw/fetched-1/live.csv", data)
    raw = open_raw(storage, {"identifier": "datasets/x/raw/fetched-1/live.csv",
                             "chunks": sink.chunks})
    parts = cut_parts(raw, "csv", CsvOptions(), 3000)
    assert [(p.start, p.end) for p in parts] == [
        (p.start, p.end) for p in cut_parts(_res(data), "csv", CsvOptions(), 3000)]
    _check_csv_parts(data, parts, 7)
    assert b"".join(open_part(raw, p).read()[7:] for p in parts) == data[7:]
    part = pickle.loads(pickle.dumps(parts[1]))
    assert part == parts[1] and len(pickle.dumps(part)) < 300
    assert part.describe() == f"live.csv bytes {part.start}-{part.end}"
    assert Part(0, "live.csv", "bytes", 67108864, 134217728).describe() == (
        "live.csv bytes 67108864-134217728")
    assert Part(1, "data.parquet", "row_groups", 4, 8).describe() == "data.parquet row groups 4-7"
    assert Part(1, "data.parquet", "row_groups", 4, 5).describe() == "data.parquet row group 4"
    assert Part(2, "photos/", "members", 0, 10, 0, (1000, 2000, "a/1.jpg", "b/9.jpg")
                ).describe() == "photos/ files 1000-1999 (a/1.jpg .. b/9.jpg)"
    with pytest.raises(ValueError, match="consecutive"):
        assemble([scan_range(io.BytesIO(data), 0, 10)], 7)
