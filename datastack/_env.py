"""Validated readers of ``DATASTACK_*`` environment settings: one place, one kind of message.

Every numeric or boolean setting is read through these functions, so ``nan``, ``inf``,
``1e308``, a negative number or garbage is a :class:`~datastack.errors.ConfigurationError`
naming the variable, what it expects and what it got (never a raw ``ValueError``, a hang or a
silent fallback). An unset or empty variable gives the default.

>>> env_float("DATASTACK_PROBE_TIMEOUT", 2.0, maximum=600, environ={})
2.0
>>> env_int("DATASTACK_MAX_COLUMNS", 10, environ={"DATASTACK_MAX_COLUMNS": " 12 "})
12
>>> env_float("DATASTACK_PROBE_TIMEOUT", 2.0, maximum=600,
...           environ={"DATASTACK_PROBE_TIMEOUT": "nan"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
datastack.errors.ConfigurationError: DATASTACK_PROBE_TIMEOUT='nan' is not valid: expected ...
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping

from datastack.errors import ConfigurationError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
#: Longest value shown back in a message (the rest is cut).
_SHOWN = 40
#: Digits an integer setting may have (Python refuses to convert 4,300 and more).
_MAX_DIGITS = 30
_INTEGER = re.compile(rf"[+-]?\d{{1,{_MAX_DIGITS}}}", re.ASCII)
_SIZE = re.compile(r"(\d{1,20}(?:\.\d{1,20})?)\s*([KMGT]?)(?:I?B)?", re.ASCII | re.IGNORECASE)
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _raw(name: str, environ: Mapping[str, str] | None) -> str:
    return (os.environ if environ is None else environ).get(name, "").strip()


def invalid(name: str, raw: str, expected: str, example: object) -> ConfigurationError:
    """The error for a bad setting: variable, value (cut), what is expected, what to do."""
    shown = raw if len(raw) <= _SHOWN else raw[:_SHOWN] + "..."
    return ConfigurationError(
        f"{name}={shown!r} is not valid: expected {expected} (e.g. {example}); fix or unset "
        "the variable"
    )


def parse_float(
    raw: str, name: str, *, maximum: float, minimum: float = 0.0, unit: str = "seconds",
    example: float = 1.0,
) -> float:
    """``raw`` as a finite float with ``minimum < value <= maximum``."""
    expected = f"a finite number of {unit} > {minimum:g} and <= {maximum:g}"
    text = raw.strip()
    try:
        value = float(text) if text.isascii() and len(text) <= 64 else math.nan
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and minimum < value <= maximum):
        raise invalid(name, raw, expected, example)
    return value


def env_float(
    name: str, default: float, *, maximum: float, minimum: float = 0.0, unit: str = "seconds",
    environ: Mapping[str, str] | None = None,
) -> float:
    """A positive finite float setting (``minimum < value <= maximum``)."""
    raw = _raw(name, environ)
    if not raw:
        return default
    return parse_float(raw, name, maximum=maximum, minimum=minimum, unit=unit, example=default)


def env_int(
    name: str, default: int, *, minimum: int = 0, maximum: int = 1 << 62,
    environ: Mapping[str, str] | None = None,
) -> int:
    """An integer setting with ``minimum <= value <= maximum`` (ASCII digits only)."""
    raw = _raw(name, environ)
    if not raw:
        return default
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or not minimum <= value <= maximum:
        raise invalid(name, raw, f"a whole number >= {minimum} and <= {maximum}", default)
    return value


def env_bool(name: str, default: bool, environ: Mapping[str, str] | None = None) -> bool:
    """A boolean setting: ``1/true/yes/on`` or ``0/false/no/off`` (any case)."""
    raw = _raw(name, environ).lower()
    if not raw:
        return default
    if raw in _TRUE | _FALSE:
        return raw in _TRUE
    raise invalid(name, raw, "1, true, yes, on or 0, false, no, off", int(default))


def parse_size(raw: str, setting: str) -> int:
    """Bytes from ``raw`` (an int, or a number with a K, M, G or T suffix, optional ``iB``/``B``);
    ``setting`` names the variable in the error message.

    >>> parse_size("32M", "DATASTACK_CACHE_BYTES"), parse_size("1.5GiB", "X")
    (33554432, 1610612736)
    """
    match = _SIZE.fullmatch(raw.strip())
    if match is None:
        raise invalid(setting, raw, "a size in bytes >= 0, optionally with K, M, G or T",
                      "268435456 or 256M")
    return int(float(match[1]) * _UNITS[match[2].upper()])


def env_size(name: str, default: int, environ: Mapping[str, str] | None = None) -> int:
    """A size setting (see :func:`parse_size`)."""
    raw = _raw(name, environ)
    return parse_size(raw, name) if raw else default


__all__ = ["env_bool", "env_float", "env_int", "env_size", "invalid", "parse_float",
           "parse_size"]
