"""A refused delivery never waits on a lock: while a valid delivery holds its transaction open (the webhook's row
updated; on SQLite, the database's write lock), a delivery with a wrong token is answered 401 at once, and its
refusal is kept when that needs no lock (PostgreSQL) or skipped (SQLite), never a 503."""

from __future__ import annotations

import time

import httpx
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from app.config import Settings
from app.main import create_app
from app.tech import service as tech
from app.tech.models import HookKind, TrackerRefusal
from tests.factories import make_pm
from tests.helpers.databases import connected, own_database
from tests.helpers.trackers import payload


async def test_a_refusal_does_not_wait_for_a_valid_delivery_holding_the_webhooks_row(tmp_path):
    with own_database(tmp_path, "refusals") as url:
        settings = Settings(database_url=url, secret_key="refusals-" + "x" * 40, base_url="http://testserver",
                            redis_url="", _env_file=None)  # type: ignore[call-arg]
        with connected(url) as database:
            with database.transaction() as session:
                pm = make_pm(session, email="pat@example.com")
                hook = tech.create_hook(session, data=tech.HookForm(name="GitLab", kind=HookKind.gitlab), actor=pm)
                hook_id, public_id = hook.id, hook.public_id
            app = create_app(settings, database)
            async with LifespanManager(app) as manager, httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
                # What a valid delivery's transaction holds while it runs (on SQLite, BEGIN IMMEDIATE's write lock).
                holder = database.engine.execution_options(ahead_write=True).connect()
                try:
                    holder.execute(text("UPDATE tracker_hooks SET last_delivery_at = CURRENT_TIMESTAMP WHERE id = :id"),
                                   {"id": hook_id})
                    started = time.monotonic()
                    answer = await client.post(f"/hooks/gitlab/{public_id}", content=payload("gitlab_issue_closed.json"),
                                               headers={"content-type": "application/json", "x-gitlab-token": "wrong"})
                    took = time.monotonic() - started
                finally:
                    holder.rollback()
                    holder.close()
                assert answer.status_code == 401, answer.text
                assert took < 2.5, took  # the lock timeouts are 5 s (PostgreSQL) and 15 s (SQLite): it waited for neither
                with database.transaction() as session:
                    kept = session.query(TrackerRefusal).filter_by(hook_id=hook_id).count()
                assert kept == (0 if url.startswith("sqlite") else 1)
                # With nothing held, the next refusal is kept.
                again = await client.post(f"/hooks/gitlab/{public_id}", content=payload("gitlab_issue_closed.json"),
                                          headers={"content-type": "application/json", "x-gitlab-token": "wrong"})
                assert again.status_code == 401
                with database.transaction() as session:
                    assert session.query(TrackerRefusal).filter_by(hook_id=hook_id).count() == kept + 1
