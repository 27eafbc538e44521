"""Alembic is the only way the schema is made: the models and the migrations must agree."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, head_revision, upgrade
from app.models import metadata
from tests.conftest import create_database


def test_models_and_migrations_agree(database):
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_upgrade_downgrade_upgrade_on_an_empty_database(tmp_path):
    url, drop = create_database(tmp_path, "roundtrip")
    try:
        upgrade(url)
        downgrade(url, "base")
        engine = create_engine(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
            assert "items" in inspect(conn).get_table_names()
        engine.dispose()
    finally:
        drop()


async def test_readyz_reports_the_current_revision(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "revision": head_revision()}


async def test_healthz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}


def test_upgrading_keeps_existing_rows(tmp_path):
    """SQLite rebuilds a table to alter it; rows that refer to it must survive (no cascade)."""
    from sqlalchemy import text

    url, drop = create_database(tmp_path, "keep")
    try:
        upgrade(url, "aa6a4c3d1b95")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (id, email, display_name, role, is_active, created_at) "
                              "VALUES (1, 'kept@example.com', 'Kept', 'admin', true, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO user_sessions (id, user_id, created_at, expires_at, user_agent) "
                              "VALUES ('s1', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '')"))
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM user_sessions")).scalar() == 1
            assert conn.execute(text("SELECT email FROM users")).scalar() == "kept@example.com"
        engine.dispose()
    finally:
        drop()
