from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

import pytest

from datastack.retrieval import Backoff
from datastack.storage import connect
from datastack.storage.base import StorageConnector

PAYLOAD = os.urandom(64 * 1024) + b"tail"
PASSWORD = "Sentinel-pa55word-XYZZY"


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def payload() -> bytes:
    return PAYLOAD


@pytest.fixture
def store(tmp_path: Path) -> StorageConnector:
    return connect(tmp_path / "store")


@pytest.fixture
def fast() -> dict[str, Any]:
    """HTTPRetriever options for tests: short timeouts, tiny backoff, no progress output."""
    return {
        "timeout": (2.0, 2.0),
        "max_retries": 3,
        "backoff": Backoff(initial=0.01, maximum=0.05, max_retry_after=3.0),
        "progress": False,
    }


@pytest.fixture(scope="session")
def tls_cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 (cert path, key path)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    try:
        subprocess.run(
            [
                "openssl",
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "1",
                "-keyout",
                str(key),
                "-out",
                str(cert),
                "-subj",
                "/CN=127.0.0.1",
                "-addext",
                "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError) as exc:
        pytest.skip(f"openssl is needed to make a test certificate: {exc}")
    return str(cert), str(key)
