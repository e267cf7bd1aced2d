"""A fault-injecting HTTP proxy in front of the moto S3 server (or Azurite): a real network path that answers some
requests with `503 SlowDown` (S3's throttling answer), another HTTP status (`kind` "429", "500", ...), or drops the
connection without answering, at a seeded rate (0 for none).
It records every request, so it also counts what a run sends to the store. Also a plain HTTP server of an archive
folder (`archive_server`), which honours Range requests or, as Python's `http.server` does, ignores them."""

from __future__ import annotations

import http.client
import random
import re
import socket
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

S = TypeVar("S", bound=ThreadingHTTPServer)
SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)
_ERROR = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>Http{status}</Code><Message>Injected.</Message></Error>'


class FaultyProxy(ThreadingHTTPServer):
    """Forwards every request to `target`; a fraction `rate` of them get the fault `kind` instead."""

    daemon_threads = True

    def __init__(self, target: str, kind: str, rate: float, seed: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        parts = urlsplit(target)
        self.target = (parts.hostname, parts.port)
        self.kind, self.rate = kind, rate
        self.random = random.Random(seed)
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.requests: list[tuple[str, str]] = []  # (method, path with query) of every request, in arrival order

    @property
    def endpoint_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"

    def decide(self, method: str, path: str) -> str:
        """"forward" or the fault kind, drawn once per request (which is recorded)."""
        with self.lock:
            self.requests.append((method, path))
            outcome = self.kind if self.random.random() < self.rate else "forward"
            self.counts[outcome] += 1
            return outcome


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: FaultyProxy

    def log_message(self, format: str, *args: object) -> None:  # quiet: one line per request otherwise
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                chunk = self.rfile.read(size)
                self.rfile.readline()
                if size == 0:
                    return b"".join(chunks)
                chunks.append(chunk)
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _handle(self) -> None:
        body = self._body()
        outcome = self.server.decide(self.command, self.path)
        if outcome == "drop":
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if outcome.isdigit():  # an HTTP status: "503" is S3's SlowDown, others a bare answer of that status
            status = int(outcome)
            body = SLOW_DOWN if status == 503 else _ERROR.format(status=status).encode()
            self.send_response(status, "Slow Down" if status == 503 else None)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        upstream = http.client.HTTPConnection(*self.server.target, timeout=60)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "connection")}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        upstream.request(self.command, self.path, body=body or None, headers=headers)
        answer = upstream.getresponse()
        payload = answer.read()
        self.send_response(answer.status, answer.reason)
        for name, value in answer.getheaders():
            if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(name, value)
        # a HEAD answer has no body but says the object's length
        length = answer.getheader("Content-Length", "0") if self.command == "HEAD" else str(len(payload))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)
        upstream.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle


@contextmanager
def faulty_proxy(target: str, kind: str, rate: float, seed: int = 0) -> Iterator[FaultyProxy]:
    """A running proxy for the duration of the block."""
    with _serving(FaultyProxy(target, kind, rate, seed)) as proxy:
        yield proxy


class _ArchiveHandler(SimpleHTTPRequestHandler):
    """Serves a folder; honours `Range: bytes=a-b` (206 Partial Content) only where its server says so, as Python's
    own `SimpleHTTPRequestHandler` does not (it answers 200 with the whole file, which RFC 9110 allows)."""

    server: ArchiveServer

    def log_message(self, format: str, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        wanted = self.headers.get("Range")
        with self.server.lock:
            self.server.ranges.append(wanted)
        match = re.fullmatch(r"bytes=(\d+)-(\d+)", wanted or "")
        path = Path(self.translate_path(self.path))
        if not self.server.honour_range or match is None or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        start, last = int(match[1]), min(int(match[2]), len(data) - 1)
        self.send_response(206, "Partial Content")
        self.send_header("Content-Range", f"bytes {start}-{last}/{len(data)}")
        self.send_header("Content-Length", str(last + 1 - start))
        self.end_headers()
        self.wfile.write(data[start : last + 1])


class ArchiveServer(ThreadingHTTPServer):
    """A plain HTTP server of a local archive folder on loopback; `ranges` records every GET's Range header."""

    daemon_threads = True

    def __init__(self, root: Path, honour_range: bool) -> None:
        super().__init__(("127.0.0.1", 0), partial(_ArchiveHandler, directory=str(root)))
        self.honour_range = honour_range
        self.lock = threading.Lock()
        self.ranges: list[str | None] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}/"


@contextmanager
def archive_server(root: Path, *, honour_range: bool) -> Iterator[ArchiveServer]:
    """An `ArchiveServer` of `root` running for the duration of the block."""
    with _serving(ArchiveServer(root, honour_range)) as server:
        yield server


@contextmanager
def _serving(server: S) -> Iterator[S]:
    """`server` answering requests in a thread for the duration of the block, then shut down and closed."""
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
