"""Cron expressions (the ``schedule`` of a dataset spec): validation and fire times.

:func:`validate_cron` makes an invalid schedule fail at spec-parsing time, before any download,
naming the field that is wrong. :func:`fire_times` is the schedule arithmetic (previous/next
fire times for "overdue"), done by ``cronsim`` (the engine Prefect itself uses). Schedules are
in UTC.
"""

from __future__ import annotations

import datetime as dt

_MONTHS = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
_DAYS = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"]
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}),
    ("hour", 0, 23, {}),
    ("day of month", 1, 31, {}),
    ("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    ("day of week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)
_CRON_MACROS = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")


def validate_cron(expression: str) -> str:
    """Return ``expression`` if it is a valid 5-field cron expression that fires, else raise
    ``ValueError``.

    Fields: minute, hour, day of month, month (1-12 or jan-dec), day of week (0-7 or sun-sat);
    each a ``*``, a value, a range ``a-b``, with an optional step ``/n``, or a comma list of those;
    the day of month may also be ``L`` (its last day), the day of week ``N#K`` (``1#2``: the
    second Monday), as Prefect accepts them. The macros ``@hourly``, ``@daily``, ``@weekly``,
    ``@monthly``, ``@yearly`` are accepted.

    >>> validate_cron("*/15 3 L jan-jun mon,fri")
    '*/15 3 L jan-jun mon,fri'
    >>> validate_cron("61 * * * *")
    Traceback (most recent call last):
    ...
    ValueError: minute: 61 is out of range 0-59
    >>> validate_cron("0 0 31 2 *")
    Traceback (most recent call last):
    ...
    ValueError: day of month: 31 never occurs in month(s) 2: the schedule would never fire
    """
    text = expression.strip()
    if text.lower() in _CRON_MACROS:
        return expression
    fields = text.split()
    if len(fields) != 5:
        raise ValueError(
            f"expected 5 fields (minute hour day-of-month month day-of-week), got {len(fields)}"
        )
    for value, (label, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in value.split(","):
            if label.startswith("day of") and any(c in item.upper() for c in "LW#"):
                _special_day(item, label, names)
            else:
                _cron_item(item, label, low, high, names)
    _first_fire(text, fields)
    return expression


def _special_day(item: str, label: str, names: dict[str, int]) -> None:
    """``L`` (last day of the month) and ``N#K`` (the K-th weekday N): what both cronsim
    (fire times here) and Prefect's scheduler understand; ``LW``, ``5L``, ``L5``, ``15W``
    are each known to only one of them, so they are refused."""
    if label == "day of month" and item.upper() == "L":
        return
    day, hash_, nth = item.partition("#")
    if label == "day of week" and hash_ and nth in {"1", "2", "3", "4", "5"}:
        _cron_item(day, label, 0, 7, names)
        return
    raise ValueError(
        f"{label}: {item!r} is not supported; of the special characters, use L in the day "
        "of month (its last day) or N#K in the day of week (the K-th weekday N of the month, "
        "K 1-5): LW, W and nL are not understood by Prefect's scheduler"
    )


def _first_fire(text: str, fields: list[str]) -> dt.datetime:
    """The first fire time after 2000-01-01 as cronsim computes it (ValueError if none)."""
    from cronsim import CronSim, CronSimError

    try:
        return next(CronSim(text, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)))
    except (CronSimError, StopIteration) as exc:
        reason = str(exc) or "no fire time"
    if "day-of-month" in reason and not any(c in fields[2].upper() for c in "LW"):
        raise ValueError(
            f"day of month: {fields[2]} never occurs in month(s) {fields[3]}: the schedule "
            "would never fire"
        ) from None
    for (label, *_), value in zip(_CRON_FIELDS, fields, strict=True):
        if label.replace(" ", "-") in reason.lower():
            raise ValueError(f"{label}: {value!r} is not valid ({reason})") from None
    raise ValueError(f"{text!r} is not a valid schedule ({reason})") from None


def _cron_item(item: str, label: str, low: int, high: int, names: dict[str, int]) -> None:
    def number(token: str) -> int:
        if token.lower() in names:
            return names[token.lower()]
        if not token.isdigit():
            raise ValueError(f"{label}: {token!r} is not a number" + (" or name" if names else ""))
        number_ = int(token)
        if not low <= number_ <= high:
            raise ValueError(f"{label}: {number_} is out of range {low}-{high}")
        return number_

    if not item:
        raise ValueError(f"{label}: empty list item")
    base, _, step = item.partition("/")
    if "/" in item and (not step.isdigit() or not 1 <= int(step) <= high - low + 1):
        raise ValueError(f"{label}: step {step!r} must be an integer in 1-{high - low + 1}")
    if base == "*":
        return
    start, dash, end = base.partition("-")
    first = number(start)
    if dash:
        last = number(end)
        if last < first:
            raise ValueError(f"{label}: range {base!r} goes backwards")


_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}


def fire_times(expression: str, after: dt.datetime, count: int) -> list[dt.datetime]:
    """The next ``count`` fire times of ``expression`` strictly after ``after`` (UTC).

    >>> import datetime as dt
    >>> [t.minute for t in fire_times("*/5 * * * *", dt.datetime(2026, 1, 1, 10, 2,
    ...                                 tzinfo=dt.UTC), 2)]
    [5, 10]
    """
    from cronsim import CronSim

    text = _MACROS.get(expression.strip().lower(), expression.strip())
    start = after.astimezone(dt.UTC) if after.tzinfo else after.replace(tzinfo=dt.UTC)
    times = CronSim(text, start)
    return [next(times) for _ in range(count)]
