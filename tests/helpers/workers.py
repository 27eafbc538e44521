"""`ahead worker` as a real process of its own (crash and concurrency tests of the outbox)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import func, select

from app.config import ROOT
from app.db import Database
from app.outbox.models import JobState, OutboxJob


def start_worker(database_url: str, smtp_port: int, log_path: Path, **settings: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": database_url, "SMTP_URL": f"smtp://127.0.0.1:{smtp_port}",
           "SECRET_KEY": "test-secret-key-" + "x" * 32, "BASE_URL": "http://roadmap.example",
           "REDIS_URL": "", "OUTBOX_POLL_SECONDS": "0.2", "OUTBOX_LEASE_SECONDS": "2",
           **{name.upper(): value for name, value in settings.items()}}
    with log_path.open("ab") as log:
        return subprocess.Popen([sys.executable, "-m", "app.cli", "worker"], cwd=ROOT, env=env,
                                stdout=log, stderr=subprocess.STDOUT)


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def pending(database: Database) -> int:
    with database.transaction() as session:
        return session.scalar(select(func.count()).select_from(OutboxJob)
                              .where(OutboxJob.state == JobState.pending)) or 0


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.05)
