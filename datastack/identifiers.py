"""Validation of resource identifiers and dataset names.

Identifiers are validated once, in the public method that receives them, before any I/O.
The rules are an allow-list: we reject rather than sanitise.

>>> validate_identifier("mnist/v1/data.h5")
'mnist/v1/data.h5'
>>> validate_identifier("../etc/passwd")
Traceback (most recent call last):
...
datastack.errors.InvalidIdentifierError: invalid identifier '../etc/passwd': ...
"""

from __future__ import annotations

import re
import unicodedata

from datastack.errors import InvalidIdentifierError

MAX_IDENTIFIER_LENGTH = 512
MAX_SEGMENT_LENGTH = 255
MAX_NAME_LENGTH = 128

_NAME_RE = re.compile(r"[a-z0-9][a-z0-9._-]*\Z")
# Windows device names are refused as segments so that a filesystem store can move anywhere.
_RESERVED = {"con", "prn", "aux", "nul"} | {f"com{i}" for i in range(10)} | {
    f"lpt{i}" for i in range(10)
}


def _fail(identifier: object, reason: str, kind: str = "identifier") -> InvalidIdentifierError:
    shown = repr(identifier)
    if len(shown) > 80:
        shown = shown[:77] + "..."
    return InvalidIdentifierError(f"invalid {kind} {shown}: {reason}")


def validate_identifier(identifier: object) -> str:
    """Return ``identifier`` normalised to NFC, or raise :class:`InvalidIdentifierError`.

    Allowed: a relative, ``/``-separated path of non-empty segments, none of them ``.`` or
    ``..``, no NUL or control characters, no backslash, at most 512 characters.
    """
    if not isinstance(identifier, str):
        raise _fail(identifier, f"expected a str, got {type(identifier).__name__}")
    if not identifier:
        raise _fail(identifier, "expected a non-empty relative path like 'name/file.h5'")
    if len(identifier) > MAX_IDENTIFIER_LENGTH:
        raise _fail(
            identifier,
            f"expected at most {MAX_IDENTIFIER_LENGTH} characters, got {len(identifier)}",
        )
    normalised = unicodedata.normalize("NFC", identifier)
    for ch in normalised:
        if ord(ch) < 32 or ord(ch) == 127 or unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"}:
            raise _fail(identifier, f"control character {ch!r} is not allowed")
    if "\\" in normalised:
        raise _fail(identifier, "backslashes are not allowed; use '/' as separator")
    if normalised.startswith("/") or re.match(r"[A-Za-z]:", normalised):
        raise _fail(identifier, "absolute paths are not allowed; use a relative path")
    for segment in normalised.split("/"):
        if segment in {"", ".", ".."}:
            raise _fail(identifier, f"segment {segment!r} is not allowed (empty, '.' or '..')")
        if len(segment) > MAX_SEGMENT_LENGTH:
            raise _fail(identifier, f"a segment is longer than {MAX_SEGMENT_LENGTH} characters")
        if segment.split(".")[0].lower() in _RESERVED:
            raise _fail(identifier, f"segment {segment!r} is a reserved device name")
        if segment.endswith((" ", ".")):
            raise _fail(identifier, f"segment {segment!r} ends with a space or a dot")
    return normalised


def validate_prefix(prefix: object) -> str:
    """Validate a listing prefix: empty, or an identifier optionally ending with ``/``."""
    if prefix == "":
        return ""
    if not isinstance(prefix, str):
        raise _fail(prefix, f"expected a str, got {type(prefix).__name__}", "prefix")
    stripped = prefix[:-1] if prefix.endswith("/") else prefix
    return validate_identifier(stripped) + ("/" if prefix.endswith("/") else "")


def validate_dataset_name(name: object) -> str:
    """Return ``name`` if it matches ``[a-z0-9][a-z0-9._-]*`` (at most 128 characters)."""
    if not isinstance(name, str):
        raise _fail(name, f"expected a str, got {type(name).__name__}", "dataset name")
    if len(name) > MAX_NAME_LENGTH:
        raise _fail(name, f"expected at most {MAX_NAME_LENGTH} characters", "dataset name")
    if not _NAME_RE.match(name) or ".." in name:
        raise _fail(
            name,
            "expected lower-case letters, digits, '.', '_' or '-', starting with a letter or "
            "digit (e.g. 'fashion-mnist')",
            "dataset name",
        )
    if name.split(".")[0] in _RESERVED:
        raise _fail(name, "reserved device name", "dataset name")
    return name
