"""Talking to the app the way a browser does: CSRF tokens from the page, forms, a signed-in cookie."""

from __future__ import annotations

import html
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session, sessionmaker

from app.accounts import service as accounts
from app.config import Settings
from app.db import Database
from app.deps import SESSION_COOKIE
from app.main import create_app

CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
CSRF_FIELD = re.compile(r'<input type="hidden" name="csrf_token" value="([^"]+)">')


async def csrf_token(client: httpx.AsyncClient, path: str = "/login") -> str:
    """Load a page (which sets the CSRF cookie) and return the token its forms carry.

    A signed-in person's pages carry it in a meta tag; a visitor's page only where it has a form that needs it
    (a board has none: it sets no CSRF cookie), so for a visitor on such a page the sign-in page's is taken, as a
    browser would have it from the form it posts."""
    response = await client.get(path)
    match = CSRF_META.search(response.text) or CSRF_FIELD.search(response.text)
    if match is None and path != "/login":
        return await csrf_token(client, "/login")
    assert match, f"no CSRF token on {path}"
    return match.group(1)


async def post_form(client: httpx.AsyncClient, path: str, data: dict | None = None, *, page: str | None = None,
                    files: dict | None = None, **kwargs) -> httpx.Response:  # type: ignore[type-arg]
    """POST a form the way a browser does: with the token from the page it was on."""
    token = await csrf_token(client, page or "/")
    return await client.post(path, data={**(data or {}), "csrf_token": token}, files=files, **kwargs)


def sign_in(client: httpx.AsyncClient, session: Session, user) -> None:  # type: ignore[no-untyped-def]
    """Give the client a signed-in session cookie for the user (the login form has its own tests)."""
    token = accounts.start_session(session, user=user)
    client.cookies.set(SESSION_COOKIE, token)


def bound_database(database: Database, connection: Connection) -> Database:
    """The test's database, its sessions joined to the test's rolled-back transaction."""
    bound = Database.__new__(Database)
    bound.url, bound.engine = database.url, database.engine
    bound.read_sessions = bound.write_sessions = sessionmaker(
        bind=connection, join_transaction_mode="create_savepoint", expire_on_commit=False)
    # The plain reads before the stack on the same transaction (the app's own database reads outside any)
    bound.read_rows = lambda sql: list(connection.exec_driver_sql(sql).all())  # type: ignore[method-assign]
    return bound


@asynccontextmanager
async def client_for(settings: Settings, database: Database, connection: Connection, *,
                     base_url: str = "http://testserver",
                     extra_route: Callable[[Any], None] | None = None) -> AsyncIterator[httpx.AsyncClient]:
    """A client for an app built from other settings, on the test's rolled-back connection."""
    app = create_app(settings, bound_database(database, connection))
    if extra_route is not None:
        extra_route(app)
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url=base_url) as c:
            from tests.helpers.outbox import remember_app

            remember_app(c, app)
            yield c


def page_words(page: str) -> str:
    """A page's text as a reader sees it: tags dropped, entities decoded, runs of white space one space."""
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", page)))
