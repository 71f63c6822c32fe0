"""A TCP proxy on 127.0.0.1 that adds a fixed delay to every round trip (a MongoDB "across a
network" for tests and benchmarks).

Bytes from the client are held for ``delay_s`` before they go upstream; answers come back at
once, so each request/response round trip costs ``delay_s`` more, while bandwidth and
pipelining are kept (several requests in flight are delayed together, not one after another).

    proxy = LatencyProxy("127.0.0.1", 27017, delay_s=0.005).start()
    uri = f"mongodb://127.0.0.1:{proxy.port}/db?directConnection=true"
    ...
    proxy.stop()

As its own process (benchmarks: keeps the proxy's threads off the measured interpreter):
``python tests/latency_proxy.py --upstream 127.0.0.1:27017 --delay-ms 5`` prints its port.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import socket
import sys
import threading
import time


class LatencyProxy:
    """Forward ``host:port`` (listening) to ``upstream``, delaying client -> server bytes."""

    def __init__(
        self,
        upstream_host: str,
        upstream_port: int,
        delay_s: float,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.upstream = (upstream_host, int(upstream_port))
        self.delay_s = float(delay_s)
        self._listener = socket.create_server((host, port))
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._sockets: list[socket.socket] = []

    def start(self) -> LatencyProxy:
        threading.Thread(target=self._accept, name="latency-proxy", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):
                sock.close()

    def __enter__(self) -> LatencyProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            for sock in (client, upstream):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._sockets.append(sock)
            pending: collections.deque[tuple[float, bytes]] = collections.deque()
            ready = threading.Condition()
            threading.Thread(
                target=self._read_client, args=(client, pending, ready), daemon=True
            ).start()
            threading.Thread(
                target=self._send_delayed, args=(upstream, pending, ready), daemon=True
            ).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _read_client(
        self, client: socket.socket, pending: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        while True:
            try:
                data = client.recv(1 << 20)
            except OSError:
                data = b""
            with ready:
                pending.append((time.monotonic() + self.delay_s, data))
                ready.notify()
            if not data:
                return

    def _send_delayed(
        self, upstream: socket.socket, pending: collections.deque[tuple[float, bytes]],
        ready: threading.Condition,
    ) -> None:
        while True:
            with ready:
                while not pending:
                    ready.wait()
                due, data = pending.popleft()
            wait = due - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            try:
                if not data:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                upstream.sendall(data)
            except OSError:
                return

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        while True:
            try:
                data = src.recv(1 << 20)
                if not data:
                    dst.shutdown(socket.SHUT_WR)
                    return
                dst.sendall(data)
            except OSError:
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the server")
    parser.add_argument("--delay-ms", type=float, required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    proxy = LatencyProxy(host, int(port), args.delay_ms / 1000, port=args.port).start()
    print(proxy.port, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()
        sys.exit(0)


if __name__ == "__main__":
    main()
