"""/readyz: each dependency with its state; "degraded" still answers 200, "fail" answers 503."""

from __future__ import annotations

from contextlib import contextmanager

from sqlalchemy import text

from app.config import Settings
from tests.helpers.http import client_for
from tests.helpers.servers import free_port


async def test_all_good(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert {name: check["state"] for name, check in body["checks"].items()} == {
        "database": "ok", "migrations": "ok", "rate_limits": "memory", "mail": "log"}
    assert all(check["detail"] for check in body["checks"].values())
    assert response.headers["cache-control"] == "no-store"


@contextmanager
def _read_only(connection):  # type: ignore[no-untyped-def]
    """The database still answers reads but refuses writes (a read-only replica, a read-only file)."""
    if connection.dialect.name == "sqlite":
        connection.exec_driver_sql("PRAGMA query_only = ON")
        try:
            yield
        finally:
            connection.exec_driver_sql("PRAGMA query_only = OFF")
    else:
        connection.execute(text("SET TRANSACTION READ ONLY"))  # until the test's transaction rolls back
        yield


async def test_a_database_that_answers_reads_but_refuses_writes_fails(client, connection):
    with _read_only(connection):
        assert connection.execute(text("SELECT 1")).scalar() == 1  # a SELECT check would have passed
        response = await client.get("/readyz")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["state"] == "fail"
    assert body["checks"]["database"]["detail"].startswith("cannot write")


async def test_pending_migrations_fail(client, monkeypatch):
    import app.migrate

    monkeypatch.setattr(app.migrate, "head_revision", lambda: "9999_future")
    response = await client.get("/readyz")
    assert response.status_code == 503
    migrations = response.json()["checks"]["migrations"]
    assert migrations["state"] == "fail" and "ahead migrate" in migrations["detail"]


async def test_a_database_a_newer_release_migrated_keeps_this_release_ready(client, monkeypatch, connection):
    """A rolling upgrade: the next release migrated the database before its instances start. The instances of
    this release keep serving (200, degraded) instead of all leaving the proxy's rotation at once."""
    import app.migrate

    current = app.migrate.current_revision(connection)
    older = app.migrate.known_revisions() - {current}  # this release, one migration before the database
    monkeypatch.setattr(app.migrate, "known_revisions", lambda: older)
    monkeypatch.setattr(app.migrate, "head_revision", lambda: "0001_previous_head")
    response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    migrations = body["checks"]["migrations"]
    assert migrations["state"] == "newer" and current in migrations["detail"] and "newer release" in migrations["detail"]


async def test_redis_down_is_degraded_not_failed_and_mail_is_not_contacted(database, connection):
    settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="http://testserver",
                        redis_url=f"redis://127.0.0.1:{free_port()}/0",
                        smtp_url="smtp://relay.invalid:2525", _env_file=None)
    async with client_for(settings, database, connection) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "degraded"
    assert body["checks"]["rate_limits"]["state"] == "degraded"
    assert "Redis unreachable" in body["checks"]["rate_limits"]["detail"]
    assert body["checks"]["mail"] == {"state": "smtp", "detail": "sent through relay.invalid (not contacted by "
                                                                 "this check)"}


async def test_healthz_stays_cheap(client, connection):
    with _read_only(connection):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
