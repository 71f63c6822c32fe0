"""What counts as a number in a table, once for every tabular format.

Policy (``docs/preprocessing.md``, "Numbers"):

* in text (CSV cells, strings elsewhere) a number is ASCII: an optional sign, digits with an
  optional fraction and exponent (``12``, ``-1.5``, ``.5``, ``3e-7``), or ``inf``/``nan``
  spelled out. ``1_000``, full-width digits (U+FF11 U+FF12), ``0x10`` are not numbers (Python's
  ``float()`` accepts the first two): such a column is categorical, or an error in a column
  that is numeric;
* a finite literal too large for float64 (``1e400``) is an error, never ``inf``;
* an integer with magnitude above 2^53 (text, JSON, Parquet int64) is an error in a numeric
  column: float64 cannot hold it exactly, and rounding it silently would change the data.
  List such a column in ``text`` or ``categorical`` to keep it as written.

>>> parse_number("1.5e3"), parse_number("1_000"), parse_number("\\uff11\\uff12"), parse_number("x")
(1500.0, None, None, None)
>>> parse_number("1e400")
Traceback (most recent call last):
...
datastack.formats._numbers.NumberError: 1e400 overflows float64 (largest ~1.8e308)
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Integers up to this magnitude are exact in float64.
EXACT_INTEGER = 2**53

_NUMBER = re.compile(
    r"\s*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf(?:inity)?|nan)\s*", re.I | re.ASCII
)
_INTEGER = re.compile(r"\s*[+-]?\d+\s*", re.ASCII)
_INF = re.compile(r"\s*[+-]?inf(?:inity)?\s*", re.I)


class NumberError(ValueError):
    """A value that looks like a number but cannot be stored as one (the message says why)."""


class OverflowNumber(float):
    """A float parsed from a literal too large for float64 (JSON ``1e400``): ``inf`` with the
    literal kept, so the table policy can refuse it by name."""

    literal: str

    def __new__(cls, literal: str) -> OverflowNumber:
        self = super().__new__(cls, math.inf if not literal.lstrip().startswith("-") else -math.inf)
        self.literal = literal
        return self


def json_float(literal: str) -> float:
    """``parse_float`` for JSON decoders: overflow becomes an :class:`OverflowNumber`."""
    value = float(literal)
    return OverflowNumber(literal) if math.isinf(value) else value


def _too_big(text: str) -> NumberError:
    return NumberError(
        f"{text.strip()[:40]} is an integer above 2^53, which float64 cannot hold exactly; "
        "list the column in text or categorical to keep it as written"
    )


def parse_number(value: Any) -> float | None:
    """``value`` as a float, ``None`` if it is not a number; :class:`NumberError` if it is
    one that cannot be stored (overflow, an integer above 2^53)."""
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, OverflowNumber):
        raise NumberError(f"{value.literal[:40]} overflows float64 (largest ~1.8e308)")
    if isinstance(value, (int, np.integer)):
        if abs(int(value)) > EXACT_INTEGER:
            raise _too_big(str(value))
        return float(value)
    if isinstance(value, (float, np.floating)):
        return float(value)
    if not isinstance(value, str) or not _NUMBER.fullmatch(value):
        return None
    number = float(value)
    if math.isinf(number) and not _INF.fullmatch(value):
        raise NumberError(f"{value.strip()[:40]} overflows float64 (largest ~1.8e308)")
    big = abs(number) >= EXACT_INTEGER and _INTEGER.fullmatch(value) is not None
    if big and abs(int(value)) > EXACT_INTEGER:
        raise _too_big(value)
    return number


def needs_checking(cells: Sequence[Any] | NDArray[Any], values: NDArray[np.float64]) -> bool:
    """Whether a column converted in one go by numpy (which accepts what ``float()`` does)
    may hold a value the policy refuses, so it must be converted cell by cell."""
    with np.errstate(invalid="ignore"):
        if bool(np.isinf(values).any()) or bool((np.abs(values) >= EXACT_INTEGER).any()):
            return True
    if isinstance(cells, np.ndarray):
        return False
    strings = [c for c in cells if isinstance(c, str)]
    if not strings:
        return False
    joined = "".join(strings)
    return not joined.isascii() or "_" in joined
