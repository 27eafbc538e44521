"""The outbox in tests: no worker runs in the background (conftest sets OUTBOX_WORKER off) unless a test starts
one; `deliver` does now what the app's worker would do within a second of the commit."""

from __future__ import annotations

import weakref
from typing import Any

import httpx

from app.outbox.worker import Tally, run_until_empty

_apps: weakref.WeakKeyDictionary[httpx.AsyncClient, Any] = weakref.WeakKeyDictionary()


def remember_app(client: httpx.AsyncClient, app: Any) -> None:
    """Note which app a test client talks to (conftest's `client`, helpers.http.client_for)."""
    _apps[client] = app


async def deliver(app_or_client: Any) -> Tally:
    """Run the app's outbox to empty: every due email and job, with the app's current settings."""
    app = _apps.get(app_or_client, app_or_client) if isinstance(app_or_client, httpx.AsyncClient) else app_or_client
    return await run_until_empty(app.state.database, app.state.settings)
