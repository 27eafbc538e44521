"""Triggers move the sessions revision on every write of what a signed-in viewer is made of, by the app or by hand

Revision ID: c82d8e1bc9e0
Revises: 6b2e9d4f1a37
Create Date: 2026-12-04 05:00

Each worker keeps who a session cookie stands for until the content or the sessions revision moves (app/deps.py
`SignedInViewers`). The app moved the sessions revision itself when it wrote `user_sessions`; a session deleted or
expired with SQL by hand moved nothing and could still vote. From here the database moves it: every INSERT, UPDATE,
DELETE (and on PostgreSQL TRUNCATE) of `user_sessions`, an UPDATE of the columns a viewer reads of a person (name,
email, role, active, organisation) or of an organisation's segment, and a DELETE of either. Not a person's last
sign-in time: nothing kept reads it.

The move is app/revision.py's: one row of the sessions shards (33-36 here, `SESSIONS_SHARDS`) set to a fresh random
58-bit value. On PostgreSQL a statement-level trigger, BEFORE the statement takes any row lock, on the shard its
transaction id picks (one per transaction, as the app's own moves: a transaction never waits for two shards);
on SQLite a row-level trigger per event (SQLite has no other kind; writers never wait for each other there).

Downgrade: the triggers go; the app of that revision moves the sessions revision itself again.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "c82d8e1bc9e0"
down_revision: str | None = "6b2e9d4f1a37"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FIRST_SHARD, SHARDS = 33, 4
VALUE_MASK = 2**58 - 1
PERSON_COLUMNS = "display_name, email, role, is_active, organisation_id"
# (trigger name, table, PostgreSQL events, SQLite triggers as (suffix, event))
TRIGGERS = [
    ("sessions_moved_by_sessions", "user_sessions", "INSERT OR UPDATE OR DELETE OR TRUNCATE",
     [("insert", "INSERT"), ("update", "UPDATE"), ("delete", "DELETE")]),
    ("sessions_moved_by_people", "users", f"UPDATE OF {PERSON_COLUMNS} OR DELETE",
     [("update", f"UPDATE OF {PERSON_COLUMNS}"), ("delete", "DELETE")]),
    ("sessions_moved_by_organisations", "organisations", "UPDATE OF segment_id OR DELETE",
     [("update", "UPDATE OF segment_id"), ("delete", "DELETE")]),
]
_FUNCTION = "ahead_move_sessions_revision"


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            f"CREATE FUNCTION {_FUNCTION}() RETURNS trigger LANGUAGE plpgsql AS $$\nBEGIN\n"  # nosec B608 # this module's constants only
            f"INSERT INTO content_revisions (shard, value) VALUES ({FIRST_SHARD} + mod(txid_current(), {SHARDS})::int,"
            f" floor(random() * {VALUE_MASK + 1})::bigint)\n"
            "ON CONFLICT (shard) DO UPDATE SET value = excluded.value;\n"
            "RETURN NULL;\nEND\n$$")
        for name, table, events, _sqlite in TRIGGERS:
            conn.exec_driver_sql(f"CREATE TRIGGER {name} BEFORE {events} ON {table} "
                                 f"FOR EACH STATEMENT EXECUTE FUNCTION {_FUNCTION}()")
        return
    for name, table, _events, sqlite in TRIGGERS:
        for suffix, event in sqlite:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {name}_{suffix} AFTER {event} ON {table} FOR EACH ROW BEGIN\n"  # nosec B608 # this module's constants only
                f"INSERT INTO content_revisions (shard, value) VALUES ({FIRST_SHARD} + (random() & {SHARDS - 1}),"
                f" random() & {VALUE_MASK})\n"
                "ON CONFLICT (shard) DO UPDATE SET value = excluded.value;\nEND")


def downgrade() -> None:
    conn = op.get_bind()
    for name, table, _events, sqlite in TRIGGERS:
        if conn.dialect.name == "postgresql":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        else:
            for suffix, _event in sqlite:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {name}_{suffix}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {_FUNCTION}()")
