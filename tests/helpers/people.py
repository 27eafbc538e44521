"""A signed-in person's browser, and the whole app on a database of its own, for tests that need either."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import httpx
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.accounts import service as accounts
from app.accounts.models import User
from app.config import Settings
from app.db import Database
from app.main import create_app

SESSION, CSRF = "ahead_session", "ahead_csrf"


class Person:
    """A browser of one signed-in person: their session cookie, and the CSRF cookie their first page set."""

    def __init__(self, session, user: User) -> None:  # type: ignore[no-untyped-def]
        self.user = user
        self.token = accounts.start_session(session, user=user)
        self.csrf: str | None = None

    async def get(self, client: httpx.AsyncClient, path: str = "/") -> httpx.Response:
        client.cookies.clear()
        client.cookies.set(SESSION, self.token)
        if self.csrf is not None:
            client.cookies.set(CSRF, self.csrf)
        response = await client.get(path)
        assert response.status_code == 200
        self.csrf = self.csrf or response.cookies.get(CSRF)
        return response

    def form_token(self, app) -> str:  # type: ignore[no-untyped-def]
        assert self.csrf is not None
        return str(app.state.csrf.form_token(self.csrf, self.token))


@contextlib.asynccontextmanager
async def own_app(database: Database, url: str) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(database_url=url, secret_key="signed-in-" + "x" * 40, base_url="http://testserver",
                        redis_url="", _env_file=None)  # type: ignore[call-arg]
    app = create_app(settings, database)
    async with LifespanManager(app) as manager, httpx.AsyncClient(
            transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
        yield app, client
