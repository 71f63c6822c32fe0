"""Validation of path and query parameters: every bad value is a 400 (or 404) with a message.

Nothing from a URL reaches the catalog or the storage unchecked: dataset names go through
:func:`datastack.identifiers.validate_dataset_name` (an allow-list, so ``..%2F..`` and NUL
bytes never get near a path or a query), numbers are parsed and bounded, free text is bounded.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from starlette.exceptions import HTTPException

from datastack.errors import InvalidIdentifierError
from datastack.identifiers import validate_dataset_name

#: Samples one preview page shows at most (each image is one thumbnail request).
MAX_PAGE_SIZE = 48
DEFAULT_PAGE_SIZE = 24
#: Longest filter text.
MAX_QUERY_LENGTH = 200
#: Largest version number or sample index accepted (64-bit, as the catalog stores them).
MAX_INT = 2**63 - 1


def bad_request(message: str) -> HTTPException:
    return HTTPException(400, message)


def dataset_name(value: str) -> str:
    """A valid dataset name, else 404 (no such dataset can exist) with the reason."""
    try:
        return validate_dataset_name(value)
    except InvalidIdentifierError as exc:
        raise HTTPException(404, f"no such dataset: {exc}") from None


def bounded_int(
    value: str | None, what: str, *, low: int = 0, high: int = MAX_INT, default: int | None = None
) -> int | None:
    """``value`` as an int in ``[low, high]`` (``default`` when absent), else 400."""
    if value is None or value == "":
        return default
    text = value.strip()
    if not (text.isascii() and text.isdigit()) or len(text) > 19:
        raise bad_request(f"{what} must be a whole number from {low} to {high}, got {value!r:.40}")
    number = int(text)
    if not low <= number <= high:
        raise bad_request(f"{what} must be from {low} to {high}, got {number}")
    return number


def required_int(value: str, what: str, *, low: int = 0, high: int = MAX_INT) -> int:
    """A path part that must be an int in ``[low, high]``, else 400."""
    number = bounded_int(value, what, low=low, high=high)
    if number is None:
        raise bad_request(f"{what} is missing")
    return number


def version_param(params: Mapping[str, str]) -> int | None:
    """The ``version`` query parameter (>= 1), or None for the latest."""
    return bounded_int(params.get("version"), "version", low=1)


def page_params(params: Mapping[str, str]) -> tuple[int, int]:
    """``(page, size)`` of a preview: page >= 1, 1 <= size <= :data:`MAX_PAGE_SIZE`."""
    size = bounded_int(params.get("size"), "size", low=1, high=MAX_PAGE_SIZE)
    page = bounded_int(params.get("page"), "page", low=1, high=MAX_INT // MAX_PAGE_SIZE)
    return (1 if page is None else page), (DEFAULT_PAGE_SIZE if size is None else size)


def choice(value: str | None, what: str, allowed: Sequence[str], default: str) -> str:
    """``value`` if it is one of ``allowed`` (``default`` when absent), else 400."""
    if value is None or value == "":
        return default
    if value not in allowed:
        shown = ", ".join(list(allowed)[:20])
        raise bad_request(f"unknown {what} {value[:80]!r}; known: {shown}")
    return value


def query_text(params: Mapping[str, str]) -> str:
    """The filter text ``q`` (bounded; empty when absent)."""
    text = params.get("q", "")
    if len(text) > MAX_QUERY_LENGTH:
        raise bad_request(f"the filter is {len(text)} characters; at most {MAX_QUERY_LENGTH}")
    return text.strip()


__all__ = [
    "DEFAULT_PAGE_SIZE",
    "MAX_PAGE_SIZE",
    "MAX_QUERY_LENGTH",
    "bad_request",
    "bounded_int",
    "choice",
    "dataset_name",
    "page_params",
    "query_text",
    "required_int",
    "version_param",
]
