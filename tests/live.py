"""For tests that need what the rolled-back test transaction cannot give: committed rows (a second connection
sees them, a real COMMIT runs) and a real HTTP server (a client gets its answer when the server sends it, not
when the app's call returns, as with httpx's ASGITransport)."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import uvicorn

from app.migrate import upgrade
from tests.conftest import create_database


@contextmanager
def own_database(tmp: Path, label: str) -> Iterator[str]:
    """A migrated database of its own (SQLite file, or a new PostgreSQL database); its URL."""
    url, drop = create_database(tmp, label)
    try:
        upgrade(url)
        yield url
    finally:
        drop()


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """The app behind uvicorn in a thread of this process; its base URL. The socket listens before the
    server starts, so a client can connect at once (the kernel holds the connection until uvicorn accepts)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=lambda: asyncio.run(server.serve(sockets=[sock])), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()
