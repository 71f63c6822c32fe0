"""One raw input cut into parts of about ``target_bytes``, so that preparing the parts one
after another gives exactly the rows of preparing the whole input (#25.1).

* **CSV and JSON Lines** (``kind="bytes"``): byte ranges starting where a record starts. The
  input is split into equal ranges (:func:`ranges` from :func:`text_plan`'s ``head``);
  :func:`scan_range` (``TextPlan.scan``) reads one range once (workers may scan ranges in
  parallel) and :func:`assemble` (pure, cheap) combines the scans in order into the parts'
  starts. A CSV quote can hold newlines, so a ``\\n`` ends a record only outside
  quotes: a scan keeps, for each of the two quote parities its range may start with, the
  first record end; the parity at a range's start is that of all the quote bytes before it
  (from the end of the header). That parity is the reader's state only when every quote byte
  quotes (opens a field after a delimiter or a line end, closes it before one, or doubles):
  a scan also checks that, and a file where a quote is a character of an unquoted field
  (``5'10"``) is one part, read as before. A part starts at the first line holding more than
  ``\\r``/``\\n`` (JSON Lines: whitespace) after a record end, so every part but the first
  holds a record; blank lines go to the part before. A part's bytes are the header's
  (``skip_rows`` and the header line: :func:`~._csv_records.header_of`) then its range.
  An encoding where a byte ``"`` or ``\\n`` may be part of another character (UTF-16/32,
  UTF-7, ISO-2022, multi-byte Asian codecs) gives one part: the whole file.
* **Parquet** (``kind="row_groups"``): consecutive row groups summing to about
  ``target_bytes`` (compressed, from the footer: no data read; every part holds rows, empty
  row groups go with their neighbours); read one part with
  :func:`~datastack.formats.parquet.row_group_blocks`.
* **Folders and plain tars** (``kind="members"``, ``fmt="tar"``): consecutive files summing to
  about ``target_bytes``; a part's bytes are a tar of its members (the archive's bytes before
  its first file, the part's headers and data, the end-of-archive blocks), read like the whole.

>>> from datastack.resources import StreamedResource
>>> data = b'a,b\\n1,"x\\ny"\\n2,z\\n3,w\\n'
>>> raw = StreamedResource.from_bytes("t.csv", data)
>>> parts = cut_parts(raw, "csv", None, target_bytes=6)
>>> [p.describe() for p in parts]
['t.csv bytes 4-12', 't.csv bytes 12-16', 't.csv bytes 16-20']
>>> [open_part(raw, p).read() for p in parts]
[b'a,b\\n1,"x\\ny"\\n', b'a,b\\n2,z\\n', b'a,b\\n3,w\\n']
"""

from __future__ import annotations

import codecs
import io
import itertools
import re
import tarfile
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, cast

if TYPE_CHECKING:  # pragma: no cover
    from datastack.resources import StreamedResource

#: Bytes a scan reads at a time.
SCAN_BLOCK = 8 * 1024 * 1024
#: Context read around a block (a quote's neighbours; a delimiter is at most 4 bytes).
_CONTEXT = 4
#: The bytes of a line that holds no record (CSV: empty lines; JSON Lines: blank lines).
_CONTENT = {True: re.compile(rb"[^\r\n]"), False: re.compile(rb"[^ \t\r\n\x0b\x0c\x1c-\x1f]")}
#: What a scan slot found: no record end, a record end then a line with content, a record
#: end then only blank lines to the end of the range.
NONE, CONTENT, BLANK = 0, 1, 2
_TAR_END = b"\0" * (2 * tarfile.BLOCKSIZE)


@dataclass(frozen=True)
class Part:
    """One part of source ``source`` (named ``name``).

    ``kind``: ``"bytes"`` (``[start, end)`` of the file, after its first ``head`` bytes: a
    CSV header), ``"row_groups"`` (Parquet row groups ``start`` .. ``end - 1``) or
    ``"members"`` (the tar bytes ``[start, end)`` after the first ``head``: files
    ``members[0]`` .. ``members[1] - 1``, named ``members[2]`` .. ``members[3]``).
    """

    source: int
    name: str
    kind: str
    start: int
    end: int
    head: int = 0
    members: tuple[int, int, str, str] | None = None

    def describe(self) -> str:
        """The part in words, for messages: ``live.csv bytes 67108864-134217728``."""
        if self.kind == "row_groups":
            groups = (f"row group {self.start}" if self.end - self.start == 1
                      else f"row groups {self.start}-{self.end - 1}")
            return f"{self.name} {groups}"
        if self.kind == "members" and self.members is not None:
            first, stop, first_name, last_name = self.members
            if stop - first == 1:
                return f"{self.name} file {first} ({first_name})"
            return f"{self.name} files {first}-{stop - 1} ({first_name} .. {last_name})"
        return f"{self.name} bytes {self.start}-{self.end}"


@dataclass(frozen=True)
class RangeScan:
    """What :func:`scan_range` found in ``[lo, hi)``.

    ``slots[p]`` (``p``: the quote parity at ``lo``, 0 outside quotes) is ``(found, line)``:
    ``found`` one of :data:`NONE`, :data:`CONTENT`, :data:`BLANK`; ``line`` where the first
    line with content after the first record-ending ``\\n`` starts (CONTENT), or the line
    after the last ``\\n`` of the range (BLANK). ``lead`` is the same when ``lo`` itself is
    a record start (``line`` None: the content's line began before ``lo``). ``consistent[p]``:
    every quote byte quotes under parity ``p``.
    """

    lo: int
    hi: int
    quotes: int
    slots: tuple[tuple[int, int | None], tuple[int, int | None]]
    lead: tuple[int, int | None]
    consistent: tuple[bool, bool]
    #: ``ends[p]``: the ``\n`` that end a record under parity ``p``, empty lines left out
    #: (a guess of the rows, :func:`records_guess`).
    ends: tuple[int, int] = (0, 0)


def ascii_safe(encoding: str) -> bool:
    """Whether the bytes ``"``, ``\\r``, ``\\n`` and ASCII delimiters of text in ``encoding``
    are always those characters (UTF-8 and ASCII-compatible one-byte codecs)."""
    name = codecs.lookup(encoding).name
    if name in ("utf-8", "utf-8-sig"):
        return True
    if "2022" in name:
        return False
    decoded = bytes(range(256)).decode(name, errors="replace")
    return len(decoded) == 256 and decoded[:128] == "".join(map(chr, range(128)))


class _Seeker:
    """Looks for the first line with content from ``at`` on, block after block."""

    def __init__(self, at: int, line: int | None, content: re.Pattern[bytes]) -> None:
        self.at, self.line, self.content, self.done = at, line, content, False

    def feed(self, window: bytes, base: int, lo: int, hi: int) -> None:
        """``window[k]`` is byte ``base + k``; look in ``[max(at, lo), hi)``."""
        if self.done:
            return
        begin, end = max(self.at, lo) - base, hi - base
        found = self.content.search(window, begin, end)
        stop = found.start() if found else end
        newline = window.rfind(b"\n", begin, stop)
        if newline >= 0:
            self.line = base + newline + 1
        self.done = found is not None
        self.at = hi

    def result(self) -> tuple[int, int | None]:
        return (CONTENT if self.done else BLANK), self.line


def _quote_checks(np: Any, arr: Any, quotes: Any, base: int, delimiter: bytes) -> tuple[Any, Any]:
    """For each quote at ``arr[quotes]``: may it open a field (after a delimiter, a line end,
    a quote or at byte 0), may it close one (before the same, or at the end of the file:
    ``arr`` ends there when it holds no byte after the range)."""
    last = len(arr) - 1

    def byte(at: Any) -> Any:
        return np.where((at >= 0) & (at <= last), arr[np.clip(at, 0, last)], -1)

    def ends(values: Any) -> Any:
        return (values == 10) | (values == 13) | (values == 34)

    before, after = byte(quotes - 1), byte(quotes + 1)
    opens = ends(before) | ((quotes + base) == 0)
    closes = ends(after) | (quotes == last)
    width = len(delimiter)
    after_delim = np.ones(len(quotes), bool)
    before_delim = np.ones(len(quotes), bool)
    for k, value in enumerate(delimiter):
        after_delim &= byte(quotes - width + k) == value
        before_delim &= byte(quotes + 1 + k) == value
    return opens | after_delim, closes | before_delim


def scan_range(
    stream: IO[bytes], lo: int, hi: int, *, quoting: bool = True, delimiter: bytes = b",",
) -> RangeScan:
    """Read ``[lo, hi)`` of ``stream`` once (a few bytes of context around it) and report
    what :func:`assemble` needs (see :class:`RangeScan`). ``quoting``: CSV (``"`` quotes
    newlines); JSON Lines: False (every ``\\n`` ends a record)."""
    import numpy as np

    content = _CONTENT[quoting]
    seekers: list[_Seeker | None] = [None, None]
    lead = _Seeker(lo, None, content)
    quotes = 0
    consistent = [True, True]
    ends = [0, 0]
    pos = lo
    while pos < hi:
        back = min(pos, _CONTEXT)
        stream.seek(pos - back)
        want = min(SCAN_BLOCK, hi - pos)
        window = _read(stream, back + want + _CONTEXT)
        end = pos + min(want, max(0, len(window) - back))
        if end <= pos:
            break
        base = pos - back
        arr = np.frombuffer(window, np.uint8)
        inner = arr[back : back + end - pos]
        quoted = quoting and window.find(b'"', back, back + end - pos) >= 0  # memchr first
        found = (np.flatnonzero(inner == 34) + back) if quoted else np.empty(0, np.int64)
        if len(found):
            opens, closes = _quote_checks(np, arr, found, base, delimiter)
            odd = (np.arange(len(found)) + quotes) % 2 == 1  # after an odd count: closes
            for parity in (0, 1):
                closing = odd if parity == 0 else ~odd
                if not np.all(np.where(closing, closes, opens)):
                    consistent[parity] = False
        _first_ends(np, inner, found - back, quotes, seekers, pos, content)
        _count_ends(np, arr[back - 1 if back else 0 : back + end - pos], bool(back),
                    found - back, quotes, ends)
        for seeker in (*seekers, lead):
            if seeker is not None:
                seeker.feed(window, base, pos, end)
        quotes += len(found)
        pos = end
    slots = tuple((NONE, None) if s is None else s.result() for s in seekers)
    return RangeScan(lo, pos, quotes, slots, lead.result(),  # type: ignore[arg-type]
                     (consistent[0], consistent[1]), (ends[0], ends[1]))


def _count_ends(np: Any, block: Any, before: bool, quotes_at: Any, quotes: int,
                ends: list[int]) -> None:
    """Add to ``ends[p]`` the ``\n`` of ``block`` (led by the byte before it when
    ``before``) ending a non-empty record under parity ``p``."""
    inner = block[1:] if before else block
    newlines = np.flatnonzero(inner == 10)
    if not len(newlines):
        return
    previous = (block[newlines] if before  # block[k] is the byte before inner[k]
                else np.where(newlines > 0, inner[np.maximum(newlines - 1, 0)], 10))
    lines = newlines[previous != 10]
    counts = np.searchsorted(quotes_at, lines) + quotes
    even = int(np.count_nonzero(counts % 2 == 0))
    ends[0] += even
    ends[1] += len(lines) - even


def records_guess(scans: Sequence[RangeScan]) -> int:
    """The records the scans of consecutive ranges hold, read with the right parity: the
    rows a reader will give when every record ends with a ``\n`` (a guess: a last record
    without one, or lines the reader skips, make it wrong, and it is checked)."""
    parity, total = 0, 0
    for scan in scans:
        total += scan.ends[parity]
        parity = (parity + scan.quotes) % 2
    return total


def _first_ends(np: Any, inner: Any, quotes_at: Any, before: int,
                seekers: list[_Seeker | None], pos: int, content: re.Pattern[bytes]) -> None:
    """Start a seeker per parity at its first record-ending ``\\n`` in this block."""
    if all(s is not None for s in seekers):
        return
    newlines = np.flatnonzero(inner == 10)
    if not len(newlines):
        return
    counts = np.searchsorted(quotes_at, newlines) + before
    for parity in (0, 1):
        if seekers[parity] is None:
            outside = np.flatnonzero((counts + parity) % 2 == 0)
            if len(outside):
                at = pos + int(newlines[outside[0]]) + 1
                seekers[parity] = _Seeker(at, at, content)


def _read(stream: IO[bytes], size: int) -> bytes:
    chunks, got = [], 0
    while got < size:
        data = stream.read(size - got)
        if not data:
            break
        chunks.append(data)
        got += len(data)
    return b"".join(chunks)


def assemble(scans: Sequence[RangeScan], header_end: int) -> list[tuple[int, int]] | None:
    """The parts' ``[start, end)`` from the scans of consecutive ranges covering
    ``[header_end, size)`` in order (the first part starts at ``header_end``); None when the
    quotes do not all quote (the input is then one part)."""
    if not scans:
        return [(header_end, header_end)]
    if scans[0].lo != header_end or any(a.hi != b.lo for a, b in itertools.pairwise(scans)):
        raise ValueError("scans must cover consecutive ranges from the end of the header")
    parity, starts = 0, []
    pending: int | None = header_end  # a record start followed by blank lines only, so far
    for scan in scans:
        if not scan.consistent[parity]:
            return None
        led = False  # this range's part starts where the range does (its lead)
        if pending is not None:
            found, line = scan.lead
            if found == CONTENT:
                starts.append(line if line is not None else pending)
                pending, led = None, True
            elif line is not None:
                pending = line
        if pending is None and not led:
            found, line = scan.slots[parity]
            if found == BLANK:
                pending = line
            elif found == CONTENT and line is not None and line > starts[-1]:
                starts.append(line)
        parity = (parity + scan.quotes) % 2
    if parity:
        return None  # a quote left open at the end: the reader's business, on the whole
    size = scans[-1].hi
    starts = [header_end, *starts[1:]]
    return list(zip(starts, [*starts[1:], size], strict=True))


def ranges(start: int, size: int, target_bytes: int, multiple: int = 1) -> list[tuple[int, int]]:
    """``[start, size)`` cut into equal ranges of about ``target_bytes``, their count a
    multiple of ``multiple`` (the workers: no worker idles through the last round).

    >>> ranges(0, 100, 30), len(ranges(0, 100, 30, multiple=2))
    ([(0, 25), (25, 50), (50, 75), (75, 100)], 4)
    >>> len(ranges(0, 100, 40, multiple=2))
    4
    """
    count = max(1, -(-(size - start) // max(1, target_bytes)))
    if count > 1 and multiple > 1:
        count = -(-count // multiple) * multiple
    bounds = [start + (size - start) * k // count for k in range(count + 1)]
    return [(a, b) for a, b in itertools.pairwise(bounds) if b > a] or [(start, size)]


def csv_header_end(raw: StreamedResource, options: Any) -> int:
    """Where the data records of a CSV start (after ``skip_rows`` and the header)."""
    from datastack.formats._csv_records import header_of
    from datastack.formats.inputs import RawInput

    return header_of(RawInput.from_resource(raw), options)[1]


@dataclass(frozen=True)
class TextPlan:
    """How to scan a CSV or JSON Lines input: where its records start (``head``), the
    keywords of :func:`scan_range`; what a caller scanning ranges in parallel needs first."""

    head: int
    quoting: bool
    delimiter: bytes

    def scan(self, stream: IO[bytes], lo: int, hi: int) -> RangeScan:
        return scan_range(stream, lo, hi, quoting=self.quoting, delimiter=self.delimiter)


def text_plan(raw: StreamedResource, fmt: str, options: Any) -> TextPlan | None:
    """The :class:`TextPlan` of a ``csv`` or ``jsonl`` input (the CSV header read), or None
    when its bytes cannot be cut (an encoding that is not ASCII-safe: one part)."""
    if fmt != "csv":
        return TextPlan(0, False, b"\n")
    from datastack.formats.csv import CsvOptions

    options = options if options is not None else CsvOptions()
    if not ascii_safe(options.encoding):
        return None
    return TextPlan(csv_header_end(raw, options), True,
                    options.delimiter.encode(options.encoding))


def _text_parts(raw: StreamedResource, fmt: str, options: Any, target_bytes: int,
                source: int, name: str) -> list[Part]:
    size = int(raw.size)
    whole = [Part(source, name, "bytes", 0, size)]
    plan = text_plan(raw, fmt, options)
    if plan is None:
        return whole
    with raw.opener() as stream:
        scans = [plan.scan(stream, lo, hi) for lo, hi in ranges(plan.head, size, target_bytes)]
    cuts = assemble(scans, plan.head)
    if cuts is None or len(cuts) < 2:
        return whole
    return [Part(source, name, "bytes", a, b, plan.head) for a, b in cuts]


def _row_group_parts(raw: StreamedResource, target_bytes: int, source: int,
                     name: str) -> list[Part]:
    import pyarrow.parquet as pq

    from datastack.errors import FormatError

    with raw.opener() as stream:
        try:
            meta = pq.ParquetFile(stream).metadata
        except (OSError, ValueError) as exc:
            raise FormatError(f"{name}: not a readable Parquet file ({exc})") from None
        sizes = [sum(meta.row_group(g).column(c).total_compressed_size
                     for c in range(meta.num_columns)) for g in range(meta.num_row_groups)]
        rows = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    spans: list[tuple[int, int]] = []
    for a, b in _groups(sizes, target_bytes):  # a part of empty row groups joins its neighbour
        if spans and (not sum(rows[a:b]) or not sum(rows[slice(*spans[-1])])):
            a = spans.pop()[0]
        spans.append((a, b))
    return [Part(source, name, "row_groups", a, b)
            for a, b in spans] or [Part(source, name, "row_groups", 0, 0)]


def _groups(sizes: Sequence[int], target_bytes: int) -> list[tuple[int, int]]:
    """Consecutive items ``[a, b)`` summing to about ``target_bytes`` (at least one each)."""
    out, first, total = [], 0, 0
    for k, size in enumerate(sizes):
        total += size
        if total >= target_bytes or k == len(sizes) - 1:
            out.append((first, k + 1))
            first, total = k + 1, 0
    return out


def _member_parts(raw: StreamedResource, target_bytes: int, source: int,
                  name: str) -> list[Part]:
    """Files of a plain tar in parts (a compressed tar, a zip or no tar: one part, the
    whole)."""
    from datastack.formats._tar_in_place import _check_names, _plain_tar
    from datastack.formats.archives import DEFAULT_LIMITS, _scan_tar

    size = int(raw.size)
    with raw.opener() as opened:
        stream = io.BufferedReader(opened, 1 << 16)  # type: ignore[type-var]
        if not _plain_tar(stream):
            return [Part(source, name, "bytes", 0, size)]
        try:
            with tarfile.open(fileobj=stream, mode="r:") as tf:
                members = _scan_tar(tf, name, DEFAULT_LIMITS, size)
                end_of_members = tf.offset
        except (tarfile.TarError, EOFError):  # not a tar: its reader says what is wrong
            return [Part(source, name, "bytes", 0, size)]
    _check_names(name, [(m.name, m.is_dir) for m in members])
    files = [m for m in members if not m.is_dir and isinstance(m.key, tarfile.TarInfo)]
    if not files:
        return [Part(source, name, "bytes", 0, size)]
    offsets = [cast("tarfile.TarInfo", m.key).offset for m in files] + [end_of_members]
    sizes = [b - a for a, b in itertools.pairwise(offsets)]
    head = offsets[0]
    out = []
    for a, b in _groups(sizes, target_bytes):
        start = 0 if a == 0 else offsets[a]
        labels = (a, b, files[a].name, files[b - 1].name)
        out.append(Part(source, name, "members", start, offsets[b], 0 if a == 0 else head,
                        labels))
    return out


def cut_parts(
    raw: StreamedResource, fmt: str, options: Any, target_bytes: int, *, source: int = 0,
    name: str | None = None,
) -> list[Part]:
    """The parts of one raw input, in one process (:func:`scan_range` of every range, then
    :func:`assemble`). ``fmt``: ``"csv"`` (``options``: its :class:`CsvOptions`),
    ``"jsonl"``, ``"parquet"``, or ``"tar"`` (a folder source, a plain tar); any other
    format is one part, the whole input."""
    label = name or raw.identifier.rsplit("/", 1)[-1]
    if target_bytes < 1:
        raise ValueError(f"target_bytes must be at least 1, got {target_bytes}")
    if fmt in ("csv", "jsonl"):
        return _text_parts(raw, fmt, options, target_bytes, source, label)
    if fmt == "parquet":
        return _row_group_parts(raw, target_bytes, source, label)
    if fmt == "tar":
        return _member_parts(raw, target_bytes, source, label)
    return [Part(source, label, "bytes", 0, int(raw.size))]


def open_part(raw: StreamedResource, part: Part, header: bytes | None = None
              ) -> StreamedResource:
    """The bytes of ``part`` as a stream a format reader reads like the whole input: the
    header (``header``, else the first ``part.head`` bytes of ``raw``) then the range (a
    ``members`` part: then the end of the archive). A ``row_groups`` part is read from the
    whole file by :func:`~datastack.formats.parquet.row_group_blocks`."""
    from datastack.resources import Piece, spliced

    if part.kind == "row_groups":
        raise ValueError(f"{part.describe()}: Parquet parts are read from the whole file "
                         "(datastack.formats.parquet.row_group_blocks)")
    pieces: list[Piece] = [header] if header is not None else (
        [(0, part.head)] if part.head else [])
    pieces.append((part.start, part.end))
    if part.kind == "members":
        pieces.append(_TAR_END)
    return spliced(f"{raw.identifier}#part-{part.start}-{part.end}", raw, pieces)


__all__ = ["Part", "RangeScan", "TextPlan", "ascii_safe", "assemble", "csv_header_end",
           "cut_parts", "open_part", "ranges", "records_guess", "scan_range", "text_plan"]
