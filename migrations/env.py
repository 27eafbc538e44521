"""Alembic environment: the URL comes from Settings (or from the caller's config), never from alembic.ini."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from app.db import make_engine
from app.models import metadata
from app.roadmap.search import INDEX_TABLES

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    url = config.get_main_option("sqlalchemy.url")
    if url:
        return url
    from app.config import get_settings

    return get_settings().database_url


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """The search index's tables are made by their migration, not by the models: autogenerate must not drop them."""
    return not (type_ == "table" and name in INDEX_TABLES)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=metadata, literal_binds=True, render_as_batch=True,
                      include_name=include_name)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url(), foreign_keys=False)
    try:
        with engine.connect() as conn:
            _run(conn)
            if conn.dialect.name == "sqlite":
                problems = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if problems:
                    raise RuntimeError(f"migration left rows with broken foreign keys: {problems[:5]}")
    finally:
        engine.dispose()


def _run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
