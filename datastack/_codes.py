"""Category codes that never move (``docs/living.md``).

A categorical column's code ``i`` means ``labels[i]``. The labels of a dataset's first version
are sorted; every later version *continues* the labels of the version before it: a known
label keeps its code, a label seen for the first time takes the next code (new labels in
sorted order among themselves), and a label no row holds any more keeps its code reserved
(the list keeps it), so a code never changes meaning.

What a preparation continues is handed down as a plain value, :data:`KnownCodes`: the label
lists of the last published version by column (categorical feature columns and label
fields), read from its catalog record.

>>> continued(["Adelie", "Gentoo"], ["Gentoo", "Chinstrap", "Adelie", "Biscoe"])
['Adelie', 'Gentoo', 'Biscoe', 'Chinstrap']
>>> continued(None, ["b", "a"])
['a', 'b']
>>> new_labels(["Adelie", "Gentoo"], ["Adelie", "Gentoo", "Chinstrap"])
['Chinstrap']
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

#: Column (or label field) name -> its labels in code order, of the last published version.
KnownCodes = Mapping[str, Sequence[str]]

#: Where a version's schema lists the values its version before did not have:
#: ``{column: {"count": new labels, "labels": {label: rows}}}`` (docs/living.md).
NEW_VALUES = "new_values"
#: New labels a version's schema names per column (the count says how many there are).
NEW_VALUES_NAMED = 100


def continued(
    known: Sequence[str] | None,
    seen: Iterable[str],
    key: Callable[[str], Any] | None = None,
) -> list[str]:
    """Labels in code order: ``known`` first as they are, then the labels of ``seen`` not among
    them, sorted (by ``key``). With nothing known: ``seen`` sorted, as a first version."""
    first = [str(label) for label in known or ()]
    have = set(first)
    fresh = {str(label) for label in seen} - have
    return first + sorted(fresh, key=key)  # type: ignore[arg-type]


def new_labels(known: Sequence[str] | None, labels: Sequence[str]) -> list[str]:
    """The labels of ``labels`` (continued from ``known``) that ``known`` did not have."""
    have = set(map(str, known or ()))
    return [label for label in labels if label not in have]


def known_for(known: KnownCodes | None, column: str) -> Sequence[str] | None:
    """The known labels of ``column`` (``None``: the column had no categories before)."""
    if not known:
        return None
    labels = known.get(column)
    return None if labels is None else [str(label) for label in labels]


def new_values_schema(found: Mapping[str, Mapping[str, int]]) -> dict[str, Any]:
    """``{column: {label: rows}}`` as a schema entry: the first :data:`NEW_VALUES_NAMED`
    labels of each column with their rows, and how many new labels the column has.

    >>> new_values_schema({"species": {"Chinstrap": 68}})
    {'new_values': {'species': {'count': 1, 'labels': {'Chinstrap': 68}}}}
    >>> new_values_schema({})
    {}
    """
    entry = {
        str(column): {"count": len(labels), "labels": {
            str(k): int(v) for k, v in list(labels.items())[:NEW_VALUES_NAMED]}}
        for column, labels in found.items() if labels
    }
    return {NEW_VALUES: entry} if entry else {}


def new_values_of(schema: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """The :data:`NEW_VALUES` entry of a version's schema (``{}``: none, or an older record)."""
    entry = (schema or {}).get(NEW_VALUES) if isinstance(schema, Mapping) else None
    if not isinstance(entry, Mapping):
        return {}
    return {str(column): dict(found) for column, found in entry.items()
            if isinstance(found, Mapping) and isinstance(found.get("labels"), Mapping)}


def describe_new_values(schema: Mapping[str, Any] | None) -> list[str]:
    """What a version's schema says it added, one line per new label (``datastack show``, the
    web page's changes): ``new class Chinstrap: 68 samples`` for a label field, ``new value
    Berlin in city: 2 samples`` for a categorical feature column.

    >>> describe_new_values({"fields": [{"name": "species", "kind": "label"}], "new_values": {
    ...     "species": {"count": 1, "labels": {"Chinstrap": 1234}},
    ...     "city": {"count": 3, "labels": {"Berlin": 2}}}})
    ... # doctest: +NORMALIZE_WHITESPACE
    ['new class Chinstrap: 1,234 samples', 'new value Berlin in city: 2 samples',
     '2 more new values in city']
    """
    fields = (schema or {}).get("fields") if isinstance(schema, Mapping) else None
    labels = {str(f.get("name")) for f in fields or [] if isinstance(f, Mapping)
              and f.get("kind") == "label"}
    lines = []
    for column, found in new_values_of(schema).items():
        named = found["labels"]
        for label, rows in named.items():
            what = f"new class {label}" if column in labels else f"new value {label} in {column}"
            lines.append(f"{what}: {int(rows):,} sample{'' if rows == 1 else 's'}")
        more = int(found.get("count") or 0) - len(named)
        if more > 0:
            kind = ("class", "classes") if column in labels else ("value", "values")
            lines.append(f"{more:,} more new {kind[more > 1]} in {column}")
    return lines


__all__ = [
    "NEW_VALUES",
    "NEW_VALUES_NAMED",
    "KnownCodes",
    "continued",
    "describe_new_values",
    "known_for",
    "new_labels",
    "new_values_of",
    "new_values_schema",
]
