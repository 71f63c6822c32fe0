"""Storage URIs: defaults, parsing and redaction of credentials."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from datastack.errors import ConfigurationError

DEFAULT_STORAGE = "./.datastack"
STORAGE_ENV = "DATASTACK_STORAGE"

_USERINFO_RE = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]*@")


def redact(text: str) -> str:
    """Replace the password of every ``scheme://user:password@`` in ``text`` with ``***``.

    >>> redact("mongodb://alice:s3cret@db.example:27017/team?authSource=admin")
    'mongodb://alice:***@db.example:27017/team?authSource=admin'
    """
    return _USERINFO_RE.sub(r"\g<scheme>\g<user>:***@", text)


def default_storage_uri(uri: str | os.PathLike[str] | None = None) -> str:
    """``uri`` if given, else ``$DATASTACK_STORAGE``, else ``./.datastack``."""
    if uri is not None:
        return os.fspath(uri)
    return os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE


@dataclass(frozen=True)
class StorageLocation:
    """A parsed storage URI: ``kind`` is ``"file"`` or ``"mongodb"``."""

    kind: str
    uri: str
    path: Path | None = None
    database: str | None = None

    @property
    def redacted(self) -> str:
        return redact(self.uri)


def parse_storage_uri(uri: str | os.PathLike[str] | None = None) -> StorageLocation:
    """Parse a storage URI (see DESIGN: path, ``file://``, ``mongodb://``, ``mongodb+srv://``)."""
    raw = default_storage_uri(uri)
    if "\x00" in raw:
        raise ConfigurationError("storage URI contains a NUL character")
    scheme = raw.split("://", 1)[0].lower() if "://" in raw else ""
    if scheme in {"mongodb", "mongodb+srv"}:
        parts = urlsplit(raw)
        database = unquote(parts.path.lstrip("/"))
        if not database or "/" in database:
            raise ConfigurationError(
                f"storage URI {redact(raw)!r} names no database: expected "
                "mongodb://[user:pass@]host[:port]/DBNAME[?options]"
            )
        if not re.fullmatch(r"[A-Za-z0-9_-]{1,63}", database):
            raise ConfigurationError(
                f"storage URI {redact(raw)!r}: database {database!r} must match "
                "[A-Za-z0-9_-]{1,63}"
            )
        return StorageLocation("mongodb", raw, database=database)
    if scheme == "file":
        parts = urlsplit(raw)
        if parts.netloc not in {"", "localhost"}:
            raise ConfigurationError(
                f"storage URI {raw!r}: file URIs must be file:///absolute/path (no host)"
            )
        return StorageLocation("file", raw, path=Path(unquote(parts.path)))
    if scheme:
        raise ConfigurationError(
            f"unsupported storage URI scheme {scheme!r} in {redact(raw)!r}: expected a path, "
            "file:///abs/path or mongodb://host/DBNAME"
        )
    return StorageLocation("file", raw, path=Path(raw))
