"""Start and stop a real MongoDB wire-protocol server (SecantusDB) for the test suite.

The server runs as its own process (closer to a real mongod, and killable by reliability
tests). Set ``DATASTACK_TEST_MONGO_URI`` (e.g. ``mongodb://127.0.0.1:27017``) to run the same
suite against an existing server instead.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class MongoServer:
    """A SecantusDB server process on 127.0.0.1 with its data directory."""

    storage_path: Path
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> MongoServer:
        import pymongo

        self.storage_path.mkdir(parents=True, exist_ok=True)
        self.log_path = self.storage_path.parent / f"secantus-{self.port}.log"
        log = open(self.log_path, "ab")
        self.process = subprocess.Popen(
            [
                sys.executable, "-m", "secantus", "--host", "127.0.0.1", "--port",
                str(self.port), "--storage-path", str(self.storage_path), "--standalone",
                "--log-level", "WARNING",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"SecantusDB exited with {self.process.returncode}: "
                    f"{self.log_path.read_text(errors='replace')[-2000:]}"
                )
            try:
                client: pymongo.MongoClient[dict[str, object]] = pymongo.MongoClient(
                    self.uri, serverSelectionTimeoutMS=500, connectTimeoutMS=500
                )
                client.admin.command("ping")
                client.close()
                return self
            except Exception as exc:  # noqa: BLE001 - retry until the deadline
                last = exc
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"SecantusDB did not answer within {timeout}s: {last}")

    def stop(self, kill: bool = False) -> None:
        if self.process is None:
            return
        if self.process.poll() is None:
            if kill:
                self.process.kill()
            else:
                self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> MongoServer:
        self.stop()
        return self.start()


def external_uri() -> str | None:
    """The URI of an external server to test against, from DATASTACK_TEST_MONGO_URI."""
    uri = os.environ.get("DATASTACK_TEST_MONGO_URI", "").strip()
    return uri.rstrip("/") or None
