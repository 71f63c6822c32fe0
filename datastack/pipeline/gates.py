"""Validation gates: content must pass them before it can become the latest version.

A failed gate leaves the last good version served, drops the pending version and is recorded
in the dataset's status (``datastack status`` says ``failing`` with the reason). Gates:

- **format** (always): a source that is an HTML or XML page (an error page served with 200)
  is refused before parsing; then the content must parse in the declared format;
- **schema** (always, for datasets with tracked sources): the fields/columns, dtypes and
  sample shapes stay those of the previous version, unless ``expect: {schema_change: true}``;
  a label field may gain classes (new codes after the known ones: ``docs/living.md``), but a
  known class never changes its code;
- from the spec's ``expect:`` block: ``min_samples``, ``max_samples``, ``max_change`` (largest
  relative change of the sample count against the previous version), ``classes`` (allowed
  target classes), ``new_classes`` (``false``: a label gaining a class is refused),
  ``max_missing`` (largest fraction of missing feature values).

>>> from datastack.specs import Expectations
>>> check_counts("iris", Expectations(min_samples=100), total=40, previous=None)
Traceback (most recent call last):
...
datastack.errors.GateError: dataset 'iris': gate min_samples: expected at least 100 samples, \
got 40; the previous version stays published
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from datastack._codes import new_values_of
from datastack.errors import GateError

if TYPE_CHECKING:  # pragma: no cover
    from datastack.catalog.record import VersionRecord
    from datastack.resources import StreamedResource
    from datastack.specs import DatasetSpec, Expectations

_KEEP = "the previous version stays published"
_MARKUP = (b"<!doctype html", b"<html", b"<?xml", b"<head", b"<body")
#: Formats whose sources may legitimately start with markup.
MARKUP_FORMATS: frozenset[str] = frozenset({"xml", "html"})


def _fail(name: str, gate: str, message: str) -> GateError:
    return GateError(f"dataset {name!r}: gate {gate}: {message}; {_KEEP}")


def looks_like_markup(head: bytes) -> bool:
    """Whether the first bytes of a source are an HTML/XML document (an error page?).

    >>> looks_like_markup(b"\\n  <!DOCTYPE html><title>404</title>"), looks_like_markup(b"a,b\\n")
    (True, False)
    """
    text = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return text.startswith(_MARKUP)


def check_markup(spec: DatasetSpec, url: str, resource: StreamedResource) -> None:
    """The format gate's first half: refuse an HTML/XML page served for another format."""
    if (spec.format or "") in MARKUP_FORMATS or spec.format is None:
        return
    if resource.seekable():
        resource.seek(0)
    head = resource.read(512)
    if resource.seekable():
        resource.seek(0)
    if looks_like_markup(head):
        raise _fail(
            spec.name,
            "format",
            f"{url} is an HTML/XML page, expected {spec.format} data (an error page served "
            "with status 200?)",
        )


def schema_signature(schema: Mapping[str, Any]) -> dict[str, Any]:
    """What must stay the same between versions: columns, target, dtypes and sample shapes."""
    arrays = {}
    for split, roles in (schema.get("splits") or {}).items():
        for role, info in (roles or {}).items():
            if isinstance(info, Mapping):
                arrays[f"{split}/{role}"] = (info.get("dtype"), list(info.get("shape", []))[1:])
    signature = {
        "features": schema.get("features"),
        "target": schema.get("target"),
        "arrays": dict(sorted(arrays.items())),
    }
    if "fields" in schema:  # class names may grow: compared by check_classes_kept
        signature["fields"] = [
            {k: v for k, v in f.items() if k != "names"} if isinstance(f, Mapping) else f
            for f in schema["fields"] or []
        ]
    return signature


def label_names(schema: Mapping[str, Any]) -> dict[str, list[str]]:
    """The class names of each label field of a version's schema."""
    return {
        str(f["name"]): [str(n) for n in f["names"]]
        for f in (schema.get("fields") or [])
        if isinstance(f, Mapping) and f.get("kind") == "label" and isinstance(f.get("names"), list)
    }


def check_classes_kept(name: str, schema: Mapping[str, Any], previous: VersionRecord) -> None:
    """Part of the schema gate: every class of a label field keeps its code (the previous
    version's class names start the new list); new classes may follow."""
    before = label_names(previous.schema)
    for field, names in label_names(schema).items():
        old = before.get(field)
        if old is not None and names[: len(old)] != old:
            now: list[str | None] = [*names, *[None] * len(old)]
            moved = next(i for i, label in enumerate(old) if now[i] != label)
            raise _fail(
                name,
                "schema",
                f"label {field}: class code {moved} meant {old[moved]!r:.80} in v"
                f"{previous.version} and means {now[moved]!r:.80} now; "
                "codes must keep their meaning (a preprocessor of your own: continue the "
                "known classes, docs/living.md); allow it with expect: {schema_change: true}",
            )


def check_schema(name: str, schema: Mapping[str, Any], previous: VersionRecord) -> None:
    """The schema gate: the new version keeps the previous version's schema (a label field may
    gain classes after its known ones)."""
    check_classes_kept(name, schema, previous)
    old, new = schema_signature(previous.schema), schema_signature(schema)
    for key in ("features", "target", "fields"):
        if old.get(key) != new.get(key):
            raise _fail(
                name,
                "schema",
                f"{key} changed: expected {old.get(key)!r:.300} (v{previous.version}), got "
                f"{new.get(key)!r:.300}; allow it with expect: {{schema_change: true}}",
            )
    for array in sorted(set(old["arrays"]) | set(new["arrays"])):
        before, after = old["arrays"].get(array), new["arrays"].get(array)
        if before is not None and after is not None and before != after:
            raise _fail(
                name,
                "schema",
                f"{array} changed from dtype {before[0]} samples {before[1]} (v"
                f"{previous.version}) to dtype {after[0]} samples {after[1]}; allow it with "
                "expect: {schema_change: true}",
            )


def check_counts(
    name: str, expect: Expectations, *, total: int, previous: VersionRecord | None
) -> None:
    """The ``min_samples`` / ``max_samples`` / ``max_change`` gates."""
    if expect.min_samples is not None and total < expect.min_samples:
        raise _fail(
            name, "min_samples", f"expected at least {expect.min_samples} samples, got {total}"
        )
    if expect.max_samples is not None and total > expect.max_samples:
        raise _fail(
            name, "max_samples", f"expected at most {expect.max_samples} samples, got {total}"
        )
    if expect.max_change is not None and previous is not None:
        before = sum(previous.splits.values())
        change = abs(total - before) / max(before, 1)
        if change > expect.max_change:
            raise _fail(
                name,
                "max_change",
                f"the sample count changed by {change:.0%} ({before} in v{previous.version} -> "
                f"{total}); expected at most {expect.max_change:.0%}",
            )


def check_new_classes(name: str, expect: Expectations, schema: Mapping[str, Any],
                      previous: VersionRecord | None) -> None:
    """The ``new_classes: false`` gate: no label field gains a class the previous version did
    not have. The classes are compared by name (so a custom preparation is held to it too);
    the counts come from the new values a built-in preparation lists (``datastack._codes``)."""
    if expect.new_classes or previous is None:
        return
    before = label_names(previous.schema or {})
    listed = new_values_of(schema)
    for field, names in sorted(label_names(schema).items()):
        new = [label for label in names if label not in set(before.get(field, names))]
        if not new:
            continue
        rows = (listed.get(field) or {}).get("labels") or {}
        shown = ", ".join(f"{label} ({rows[label]} samples)" if label in rows else label
                          for label in new[:20])
        more = f" and {len(new) - 20} more" if len(new) > 20 else ""
        raise _fail(
            name,
            "new_classes",
            f"label {field} has {len(new)} new class(es): {shown}{more}; expected "
            "none (expect: {new_classes: false}); allow them by removing that key",
        )


def check_values(name: str, expect: Expectations, stats: Mapping[str, Any]) -> None:
    """The ``classes`` and ``max_missing`` gates, from the statistics of the prepared file."""
    if expect.classes is not None and stats.get("classes") is not None:
        unexpected = sorted(set(map(str, stats["classes"])) - set(expect.classes))
        if unexpected:
            raise _fail(
                name,
                "classes",
                f"target classes {unexpected[:20]} are not among the expected "
                f"{list(expect.classes)[:20]}",
            )
    if expect.max_missing is not None and stats.get("values"):
        fraction = stats.get("missing", 0) / stats["values"]
        if fraction > expect.max_missing:
            raise _fail(
                name,
                "max_missing",
                f"{fraction:.1%} of the feature values are missing ({stats['missing']} of "
                f"{stats['values']}); expected at most {expect.max_missing:.1%}",
            )


def check_version(
    spec: DatasetSpec,
    splits: Mapping[str, int],
    schema: Mapping[str, Any],
    stats: Mapping[str, Any],
    previous: VersionRecord | None,
) -> None:
    """Every gate that applies to a prepared version (raises :class:`GateError`)."""
    expect = spec.expect
    if spec.tracked and previous is not None and not (expect and expect.schema_change):
        check_schema(spec.name, schema, previous)
    if expect is not None:
        check_counts(spec.name, expect, total=sum(splits.values()), previous=previous)
        check_new_classes(spec.name, expect, schema, previous)
        check_values(spec.name, expect, stats)


def needs_stats(spec: DatasetSpec) -> bool:
    """Whether the gates need value statistics (a pass over the prepared file)."""
    return spec.expect is not None and (
        spec.expect.classes is not None or spec.expect.max_missing is not None
    )


def file_stats(path: Any, target_labels: Sequence[str] | None = None) -> dict[str, Any]:
    """Missing-value counts of float features and the target classes of a canonical file.

    Reads in blocks (bounded memory). ``target_labels``: the target's category labels, when
    it is categorical (codes are mapped back to labels).
    """
    import h5py
    import numpy as np

    missing = values = 0
    classes: set[Any] = set()
    with h5py.File(path, "r") as f:
        for group in f.values():
            if not isinstance(group, h5py.Group):
                continue
            samples = group.get("samples")
            if isinstance(samples, h5py.Dataset) and samples.dtype.kind == "f":
                step = max(1, (8 << 20) // max(1, samples[0:1].nbytes))
                for start in range(0, samples.shape[0], step):
                    block = samples[start : start + step]
                    missing += int(np.isnan(block).sum())
                    values += int(block.size)
            targets = group.get("targets")
            if isinstance(targets, h5py.Dataset) and targets.ndim == 1:
                classes.update(np.unique(targets[()]).tolist())
    if target_labels is not None:
        classes = {target_labels[int(c)] for c in classes if 0 <= int(c) < len(target_labels)}
    return {"missing": missing, "values": values, "classes": sorted(classes, key=str)}


__all__ = [
    "check_classes_kept",
    "check_counts",
    "check_markup",
    "check_new_classes",
    "check_schema",
    "check_values",
    "check_version",
    "file_stats",
    "label_names",
    "looks_like_markup",
    "needs_stats",
    "schema_signature",
]
