"""Real servers for tests that an in-process ASGI call cannot stand for: `serve` runs the app behind uvicorn
in a thread of this process (a client gets its answer when the server sends it); `start_live_server` runs
uvicorn in a subprocess, with worker processes of its own, on a database of its own (browser journeys,
concurrency)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import Session

from app.cli import SERVING_LOOP
from app.config import ROOT
from app.db import Database
from app.migrate import upgrade
from app.roadmap.models import Stage
from tests.helpers.databases import create_database

# Seconds a live server may take to answer /healthz: importing the app took 25 s at load 13 on 2 cores.
START_SECONDS = 120


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    database: Database
    log_path: Path
    default_stages: list[dict[str, Any]] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def stage_rows(session: Session) -> list[dict[str, Any]]:
    columns = [c.key for c in Stage.__table__.columns]
    return [
        {key: getattr(stage, key) for key in columns}
        for stage in session.scalars(select(Stage).order_by(Stage.id))
    ]


@contextmanager
def start_live_server(tmp: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None,
                      workers: int = 1) -> Iterator[LiveServer]:
    """A server on a database of its own. A module whose journeys need other settings (e.g. OIDC_PROVIDERS,
    which must know the server's port in advance) overrides `live_server` with one of these."""
    url, drop = create_database(tmp, "browser")
    database: Database | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        upgrade(url)
        database = Database(url)
        with database.transaction() as session:
            default_stages = stage_rows(session)
        port = port or free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "browser-journey-secret-" + "k" * 32,
            "BASE_URL": base,
            "AHEAD_ENV": "development",
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            # Every journey signs in from 127.0.0.1 against one server that lives for the whole run, often as
            # the same person: the password limits (tested over HTTP in tests/accounts) would refuse the
            # thirty-first sign-in of a minute with a 429 once the journeys run quickly.
            "LOGIN_RATE_LIMIT": "1000/minute",
            "LOGIN_IP_RATE_LIMIT": "1000/minute",
            **(extra_env or {}),
        }
        # The in-process rate limiter and cache: a shared Redis would carry state between runs.
        env.pop("REDIS_URL", None)
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(workers),
                 # as `ahead serve` does: on a busy machine a worker still importing the app misses uvicorn's
                 # 5 s ping, is killed and started again, and the server never answers
                 "--timeout-worker-healthcheck", "60",
                 "--loop", SERVING_LOOP],  # `ahead serve`'s: the journeys go through its accepting of connections
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        server = LiveServer(url=base, database=database, log_path=log_path, default_stages=default_stages)
        deadline = time.monotonic() + START_SECONDS
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{server.log_tail()}", pytrace=False)
            with suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /healthz within {START_SECONDS} s:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        if process is not None:
            _stop(process)
        if database is not None:
            database.dispose()
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
