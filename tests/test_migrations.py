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
