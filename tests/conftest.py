"""Fixtures and hooks only (helpers are imported from tests/helpers/): one migrated database per run (SQLite
file, or a fresh PostgreSQL database when DATABASE_URL points at a server); each test runs inside a
transaction that is rolled back."""

from __future__ import annotations

import inspect
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app import revision
from app.config import Settings
from app.db import Database
from app.main import create_app
from app.portal import service as portal_service
from tests.helpers.databases import connected, own_database
from tests.helpers.http import bound_database
from tests.helpers.outbox import remember_app

# No outbox worker runs in the background of a test's app: a test delivers with tests.helpers.outbox.deliver,
# or starts a worker itself.
os.environ["OUTBOX_WORKER"] = "false"


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Every `async def` test runs on anyio: marked before collection, so parametrize still applies."""
    if inspect.iscoroutinefunction(obj) and collector.istestfunction(obj, name):  # type: ignore[attr-defined]
        pytest.mark.anyio(obj)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser journeys last: their session-wide sync Playwright keeps an event loop running in this
    thread, and async tests collected after them failed with "Cannot run the event loop while another
    loop is running"."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with own_database(tmp_path_factory.mktemp("db"), "unit") as url:
        yield url


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    with connected(database_url) as db:
        yield db


@pytest.fixture
def connection(database: Database) -> Iterator[Connection]:
    with database.engine.connect() as conn:
        outer = conn.begin()
        try:
            yield conn
        finally:
            outer.rollback()


@pytest.fixture
def session(connection: Connection) -> Iterator[Session]:
    s = Session(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    revision.track_sessions(s)  # as the app's session factories are (app/revision.py)
    yield s
    s.close()


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
        redis_url="", _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def app(settings: Settings, database: Database, connection: Connection):  # type: ignore[no-untyped-def]
    """The app, its request sessions joined to the test's rolled-back transaction."""
    portal_service.clear_cache()
    application = create_app(settings, bound_database(database, connection))
    yield application
    portal_service.clear_cache()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            remember_app(c, app)
            yield c


@pytest.fixture
def still_minute(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept pages' clock stopped: a page is kept per minute (app/pagecache.py), so a test counting the cache's
    hits and misses could see a miss it did not cause when a minute turns between two of its visits."""
    from types import SimpleNamespace

    from app import pagecache

    now = pagecache.time.time()
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: now))
