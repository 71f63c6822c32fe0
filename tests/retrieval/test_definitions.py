"""ResourceDefinition, scheme checks, retriever_for, backoff and Retry-After parsing (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import pytest

from datastack.errors import (
    ConfigurationError,
    InvalidIdentifierError,
    RetrievalError,
    UnsupportedSchemeError,
)
from datastack.retrieval import (
    Backoff,
    FileRetriever,
    HTTPRetriever,
    ResourceDefinition,
    Retriever,
    retriever_for,
    source_scheme,
)
from datastack.retrieval._policy import DownloadBudget, parse_retry_after
from datastack.storage.base import StorageConnector
from tests.retrieval.conftest import PASSWORD

SHA = "a" * 64


def test_definition_normalises_and_validates() -> None:
    d = ResourceDefinition("x/y.csv", Path("/data/y.csv"), sha256="AB" * 32)  # type: ignore[arg-type]
    assert (
        d.source == "/data/y.csv" and d.sha256 == "ab" * 32 and d.checksum == ("sha256", "ab" * 32)
    )
    assert ResourceDefinition("x", "/y", md5="0" * 32).checksum == ("md5", "0" * 32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({}, "no checksum"),
        ({"sha256": "a" * 63}, "64 hexadecimal"),
        ({"sha256": "g" * 64}, "64 hexadecimal"),
        ({"md5": "a" * 64}, "32 hexadecimal"),
    ],
)
def test_definition_rejects_bad_checksums(kwargs: dict[str, str], match: str) -> None:
    with pytest.raises(ConfigurationError, match=match):
        ResourceDefinition("x/y", "https://example.org/y", **kwargs)


def test_definition_rejects_bad_identifier_and_source() -> None:
    with pytest.raises(InvalidIdentifierError):
        ResourceDefinition("../etc/passwd", "https://example.org/y", sha256=SHA)
    with pytest.raises(ConfigurationError, match="source"):
        ResourceDefinition("x", "  ", sha256=SHA)


def test_definition_repr_and_errors_hide_password() -> None:
    d = ResourceDefinition("x", f"https://bob:{PASSWORD}@example.org/y", sha256=SHA)
    assert PASSWORD not in repr(d)
    with pytest.raises(ConfigurationError) as info:
        ResourceDefinition("x", f"https://bob:{PASSWORD}@example.org/y")
    assert PASSWORD not in str(info.value)


@pytest.mark.parametrize(
    ("source", "scheme"),
    [
        ("https://example.org/a", "https"),
        ("HTTP://example.org/a", "http"),
        ("file:///data/a", "file"),
        ("/data/a:b.csv", "file"),
        ("relative/a.csv", "file"),
        ("C:\\data\\a.csv", "file"),
        ("ftp://example.org/a", "ftp"),
        ("gopher:x", "gopher"),
    ],
)
def test_source_scheme(source: str, scheme: str) -> None:
    assert source_scheme(source) == scheme


def test_retriever_for_picks_by_scheme(store: StorageConnector) -> None:
    http = ResourceDefinition("a", "https://example.org/a", sha256=SHA)
    local = ResourceDefinition("b", "/data/b", sha256=SHA)
    assert isinstance(retriever_for("https://example.org/a", store), HTTPRetriever)
    assert isinstance(retriever_for(local, store), FileRetriever)
    mixed = retriever_for([http, local], store)
    assert isinstance(mixed, Retriever) and not isinstance(mixed, (HTTPRetriever, FileRetriever))
    with pytest.raises(UnsupportedSchemeError, match="'ftp'"):
        retriever_for([http, ResourceDefinition("c", "ftp://h/c", sha256=SHA)], store)


def test_backoff_is_capped_exponential_with_jitter() -> None:
    exact = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [exact.delay(n) for n in range(1, 7)] == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = Backoff(initial=1.0, maximum=8.0, jitter=0.5)
    delays = [jittered.delay(3) for _ in range(200)]
    assert all(2.0 <= d <= 4.0 for d in delays) and len(set(delays)) > 1
    assert exact.delay(1, retry_after=3.0) == 3.0
    assert Backoff(max_retry_after=10.0).delay(1, retry_after=3600.0) == 10.0
    with pytest.raises(ConfigurationError):
        Backoff(jitter=2.0)


def test_parse_retry_after() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after("120") == 120.0
    assert (
        parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now=now)
        == 30.0
    )
    assert (
        parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now=now) == 0.0
    )
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


def test_budget_resets_only_on_new_progress() -> None:
    budget = DownloadBudget("u", max_retries=2, backoff=Backoff(0, 0, 0), deadline=None)
    budget.failed("a", received=0)
    budget.advanced(10)
    budget.failed("b", received=10)
    budget.failed("c", received=10)
    budget.advanced(10)  # a restart repeating bytes is not progress
    with pytest.raises(RetrievalError, match="3 consecutive attempts"):
        budget.failed("d", received=10)


def test_importing_retrieval_does_not_import_requests() -> None:
    import subprocess
    import sys

    code = (
        "import sys, datastack, datastack.retrieval as r; "
        "r.ResourceDefinition('a', 'https://h/a', sha256='0' * 64); "
        "print('requests' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
