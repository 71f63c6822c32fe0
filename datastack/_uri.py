"""Storage URIs: defaults, parsing and redaction of credentials."""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

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


#: A query parameter (or URI option) whose name, lower-cased without ``-``, ``_`` and ``.``,
#: holds one of these is taken to carry a secret: its value is redacted.
SECRET_NAME_PARTS = ("pass", "pwd", "secret", "token", "key", "cred", "sig", "auth", "session",
                     "private", "jwt", "bearer", "ticket", "sas")
#: ... and these exact names too (OAuth codes, short password parameters).
SECRET_NAMES = frozenset({"code", "pw", "otp", "hmac"})
#: Names that match a part above but carry no secret (MongoDB's authSource, authMechanism).
NOT_SECRET_NAMES = frozenset({"authsource", "authmechanism"})
# name= after ? & ; or # (a query string, a fragment, MongoDB options); a secret value ends at
# the next & ; # white space, quote or angle bracket (a ? may be part of it).
_PARAM_RE = re.compile(r"(?<=[?&;#])([A-Za-z0-9_.%~+-]{1,200})=")
_VALUE_END = re.compile(r"[&;#\s'\"<>]")


def is_secret_name(name: str) -> bool:
    """Whether a query parameter or URI option called ``name`` may carry a secret.

    >>> [is_secret_name(n) for n in ("X-Amz-Signature", "sig", "authSource", "replicaSet")]
    [True, True, False, False]
    """
    key = unquote(name).lower().replace("-", "").replace("_", "").replace(".", "")
    if key in NOT_SECRET_NAMES:
        return False
    return key in SECRET_NAMES or any(part in key for part in SECRET_NAME_PARTS)


def _redact_params(text: str) -> str:
    out: list[str] = []
    pos = 0
    for match in _PARAM_RE.finditer(text):
        if match.start() < pos or not is_secret_name(match.group(1)):
            continue  # inside a value already hidden, or a harmless parameter
        end = _VALUE_END.search(text, match.end())
        stop = end.start() if end is not None else len(text)
        if stop > match.end() and text[match.end():stop] != "***":
            out += [text[pos:match.end()], "***"]
            pos = stop
    out.append(text[pos:])
    return "".join(out)


def secret_values(uri: str) -> set[str]:
    """The literal secrets of ``uri`` (its password, the values of secret-ish options, and the
    parts of ``authMechanismProperties``), raw and percent-decoded: to scrub them from texts
    (a driver's message) that quote them outside the URI."""
    found: set[str] = set()
    try:
        parts = urlsplit(uri)
        if parts.password:
            found.add(parts.password)
        query = parse_qsl(parts.query, keep_blank_values=False) + parse_qsl(parts.fragment)
    except ValueError:
        return found
    for name, value in query:
        if is_secret_name(name):
            found.add(value)
            found.update(v.partition(":")[2] for v in value.split(","))
    found |= {unquote(v) for v in found}
    return {v for v in found if len(v) >= 3}


def has_secrets(uri: str) -> bool:
    """Whether showing ``uri`` would show (or, redacted, hide) a credential."""
    return redact(uri) != uri or "***" in uri


def storage_for_python(uri: str) -> str:
    """The ``storage=`` argument of a Python line a user can paste: the URI as a string
    literal, or ``os.environ["DATASTACK_STORAGE"]`` when it holds credentials (a redacted URI
    would not connect, a real one must not be shown).

    >>> storage_for_python("mongodb://db/team"), storage_for_python("mongodb://u:pw@db/team")
    ('"mongodb://db/team"', 'os.environ["DATASTACK_STORAGE"]')
    """
    import json

    return f'os.environ["{STORAGE_ENV}"]' if has_secrets(uri) else json.dumps(uri)


def storage_for_shell(uri: str) -> str:
    """The ``--storage`` value of a command line a user can paste: the URI (quoted), or
    ``"$DATASTACK_STORAGE"`` when it holds credentials.

    >>> storage_for_shell("/data/store"), storage_for_shell("mongodb://u:***@db/team")
    ('/data/store', '"$DATASTACK_STORAGE"')
    """
    import shlex

    return f'"${STORAGE_ENV}"' if has_secrets(uri) else shlex.quote(uri)


def redact(text: str) -> str:
    """Hide the credentials of every URI in ``text``: ``scheme://user:***@host...``, and the
    value of every query parameter or URI option whose name may carry a secret
    (:func:`is_secret_name`: ``X-Amz-Signature=***``, ``tlsCertificateKeyFilePassword=***``,
    ``authMechanismProperties=***``, ``token=***``, ``sig=***``...).

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
    >>> redact("https://b.s3.amazonaws.com/x.csv?X-Amz-Signature=ab12&X-Amz-Expires=60")
    'https://b.s3.amazonaws.com/x.csv?X-Amz-Signature=***&X-Amz-Expires=60'
    """
    text = _redact_userinfo(text)
    return _redact_params(text) if "=" in text else text


def _redact_userinfo(text: str) -> str:
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


class RedactingFilter(logging.Filter):
    """A logging filter that passes every record of its logger through :func:`redact`: for
    libraries that log URLs themselves (urllib3 logs each request line, query included)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def redact_logs_of(*names: str) -> None:
    """Install one :class:`RedactingFilter` on each of the loggers ``names`` (idempotent)."""
    for name in names:
        target = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in target.filters):
            target.addFilter(RedactingFilter())


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
