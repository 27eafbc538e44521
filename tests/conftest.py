"""Fixtures: one migrated database per run (SQLite file, or a fresh PostgreSQL database when
DATABASE_URL points at a server); each test runs inside a transaction that is rolled back."""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.orm import Session, sessionmaker

from app.config import Settings, normalise_database_url
from app.db import Database
from app.main import create_app
from app.migrate import upgrade


@pytest.hookimpl(tryfirst=True)
def pytest_pycollect_makeitem(collector: pytest.Collector, name: str, obj: object) -> None:
    """Every `async def` test runs on anyio: marked before collection, so parametrize still applies."""
    import inspect

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


def _server_url() -> str | None:
    url = os.environ.get("DATABASE_URL", "")
    return normalise_database_url(url) if url.startswith(("postgres://", "postgresql")) else None


def create_database(tmp_dir: Path, label: str) -> tuple[str, callable]:  # type: ignore[valid-type]
    """A brand-new empty database for this run: returns its URL and a function that drops it."""
    server = _server_url()
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


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    url, drop = create_database(tmp_path_factory.mktemp("db"), "unit")
    upgrade(url)
    yield url
    drop()


@pytest.fixture(scope="session")
def database(database_url: str) -> Iterator[Database]:
    db = Database(database_url)
    yield db
    db.dispose()


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
    from app.portal import service as portal

    portal.clear_cache()
    bound = Database.__new__(Database)
    bound.url = database.url
    bound.engine = database.engine
    factory = sessionmaker(bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    bound.read_sessions = bound.write_sessions = factory
    application = create_app(settings, bound)
    yield application
    portal.clear_cache()


@pytest.fixture
async def client(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
            yield c


_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """Load a page (which sets the CSRF cookie) and return the token its forms carry."""
    response = await client.get(path)
    match = _META.search(response.text)
    assert match, f"no CSRF token on {path}"
    return match.group(1)


async def post_form(client: httpx.AsyncClient, path: str, data: dict | None = None, *, page: str | None = None,
                    files: dict | None = None, **kwargs) -> httpx.Response:  # type: ignore[type-arg]
    """POST a form the way a browser does: with the token from the page it was on."""
    token = await csrf_token(client, page or "/")
    return await client.post(path, data={**(data or {}), "csrf_token": token}, files=files, **kwargs)


def sign_in(client: httpx.AsyncClient, session: Session, user) -> None:  # type: ignore[no-untyped-def]
    """Give the client a signed-in session cookie for the user (the login form has its own tests)."""
    from app.accounts import service as accounts
    from app.deps import SESSION_COOKIE

    token = accounts.start_session(session, user=user)
    client.cookies.set(SESSION_COOKIE, token)
