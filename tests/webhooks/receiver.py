"""A real webhook receiver on loopback: it records every call and answers as the test tells it to."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Receiver:
    port: int
    calls: list[Call] = field(default_factory=list)
    answers: list[int] = field(default_factory=list)  # status codes to give, in order; then 200
    hang_seconds: float = 0.0
    body: bytes = b'{"ok": true}'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/ahead?source=roadmap"


@contextmanager
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # the http.server name
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length)
            state.calls.append(Call(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if state.hang_seconds:
                time.sleep(state.hang_seconds)
            status = state.answers.pop(0) if state.answers else 200
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(state.body)))
            self.end_headers()
            self.wfile.write(state.body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
