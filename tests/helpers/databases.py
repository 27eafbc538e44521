"""Databases for the suite: a brand-new one per use, SQLite by default, PostgreSQL when DATABASE_URL points
at a server. Each gets a unique name, so runs (and pytest-xdist workers) never share one."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app import revision
from app.config import get_settings, normalise_database_url
from app.db import Database
from app.migrate import upgrade


def server_url() -> str | None:
    """The PostgreSQL server the suite runs on (DATABASE_URL), or None for SQLite."""
    url = os.environ.get("DATABASE_URL", "")
    return normalise_database_url(url) if url.startswith(("postgres://", "postgresql")) else None


def create_database(tmp_dir: Path, label: str) -> tuple[str, Callable[[], None]]:
    """A brand-new empty database: returns its URL and a function that drops it."""
    server = server_url()
    if server is None:
        path = tmp_dir / f"{label}.db"
        return f"sqlite+pysqlite:///{path}", lambda: None
    name = f"ahead_test_{label}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    admin_url = make_url(server).set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))

    def drop() -> None:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()

    return make_url(server).set(database=name).render_as_string(hide_password=False), drop


@contextmanager
def own_database(tmp: Path, label: str) -> Iterator[str]:
    """A migrated database of its own (for committed rows a second connection sees); its URL."""
    url, drop = create_database(tmp, label)
    try:
        upgrade(url)
        yield url
    finally:
        drop()


@contextmanager
def connected(url: str) -> Iterator[Database]:
    """The app's Database (engine and session factories) for `url`, disposed afterwards."""
    database = Database(url)
    revision.track(database)  # as the app and the CLI do: what tests write moves the content revision too
    try:
        yield database
    finally:
        database.dispose()


@contextmanager
def cli_database(tmp: Path, monkeypatch: Any, label: str) -> Iterator[Database]:
    """A migrated database of its own that the `ahead` command finds through DATABASE_URL (and a SECRET_KEY),
    with the settings cache cleared before and after, dropped afterwards."""
    url, drop = create_database(tmp, label)
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    get_settings.cache_clear()
    database = Database(url)
    try:
        yield database
    finally:
        database.dispose()
        get_settings.cache_clear()
        drop()
