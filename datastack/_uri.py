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

_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://")
_HOST_CHAR = re.compile(r"[A-Za-z0-9\[_-]")


def _last_userinfo_at(region: str) -> int:
    """Index of the last ``@`` of ``region`` that a host follows, or -1."""
    at = region.rfind("@")
    while at >= 0:
        if at + 1 < len(region) and _HOST_CHAR.match(region, at + 1):
            return at
        at = region.rfind("@", 0, at)
    return -1


def redact(text: str) -> str:
    """Hide the credentials of every URI in ``text``: ``scheme://user:***@host...``.

    Parsed, not pattern-matched: after ``scheme://``, everything up to the *last* ``@`` that a
    host follows (before the next URI or the end of the line) is userinfo, so a password may
    hold ``/ @ : % # ?`` or spaces. The user name (before the first ``:``) is kept; userinfo
    without a ``:`` (a token) is hidden whole. Works on text that is not a valid URI too.

    >>> redact("mongodb://alice:s3cret@db.example:27017/team?authSource=admin")
    'mongodb://alice:***@db.example:27017/team?authSource=admin'
    >>> redact("storage URI 'mongodb://alice:pa/SE@CRET x@127.0.0.1:27123/team' names no db")
    "storage URI 'mongodb://alice:***@127.0.0.1:27123/team' names no db"
    >>> redact("https://ghp_TOKEN@github.com/x.csv and file:///tmp/a@b.csv")
    'https://***@github.com/x.csv and file:///tmp/a@b.csv'
    """
    if "://" not in text or "@" not in text:
        return text
    out: list[str] = []
    pos = 0
    while (match := _SCHEME_RE.search(text, pos)) is not None:
        start = match.end()
        following = _SCHEME_RE.search(text, start)
        end = following.start() if following is not None else len(text)
        newline = text.find("\n", start, end)
        region = text[start : newline if newline >= 0 else end]
        if region.startswith("/"):  # file:///path or a URI without an authority: no userinfo
            out.append(text[pos:start])
            pos = start
            continue
        at = _last_userinfo_at(region)
        out.append(text[pos:start])
        if at < 0:
            pos = start
            continue
        user, colon, _ = region[:at].partition(":")
        out.append(f"{user}:***@" if colon else "***@")
        pos = start + at + 1
    out.append(text[pos:])
    return "".join(out)


def _check_hosts(uri: str) -> None:
    """Refuse a MongoDB URI whose host list has an empty host or a port that is not a number."""
    rest = uri.split("://", 1)[1]
    at = _last_userinfo_at(rest)
    authority = (rest[at + 1 :] if at >= 0 else rest).split("/", 1)[0].split("?", 1)[0]
    for host in authority.split(","):
        port = ""
        if host.startswith("["):  # [IPv6]:port
            port = host.partition("]")[2].removeprefix(":")
        elif ":" in host:
            port = host.rsplit(":", 1)[1]
        valid_port = not port or (port.isascii() and port.isdigit() and 0 < int(port) < 65536)
        if not host.strip() or host.endswith(":") or not valid_port:
            raise ConfigurationError(
                f"storage URI {redact(uri)!r}: host {redact(host)!r} needs a port number between "
                "1 and 65535 (mongodb://[user:pass@]host[:port][,host2...]/DBNAME)"
            )


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
        _check_hosts(raw)
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
