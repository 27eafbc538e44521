"""The desk's triggers recount an (item, organisation) pair from desk_org_days instead of the vote rows

Revision ID: 7e31c8ec1506
Revises: 3f9a61c0d8e2
Create Date: 2026-12-03 15:40:00

The triggers on votes, users and organisations are dropped and made again as app/desk/aggregates.py now writes
them: a pair's voters and latest day come from the organisation's votes per item and day, which the same trigger
keeps just before. What they keep is unchanged, so nothing is counted again.

Downgrade: the triggers are dropped (the previous version's code is not here, and the code that is reads columns
of 2026-12-03-1605_desk_factor_generations that a downgrade has taken away: SQLite then refuses any later
ALTER TABLE).
"""

from collections.abc import Sequence

from alembic import op

from app.desk import aggregates

revision: str = "7e31c8ec1506"
down_revision: str | None = "3f9a61c0d8e2"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    aggregates.drop_triggers(conn)
    aggregates.create_triggers(conn)


def downgrade() -> None:
    aggregates.drop_triggers(op.get_bind())
