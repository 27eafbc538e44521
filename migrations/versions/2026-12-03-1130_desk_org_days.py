"""The desk's votes per organisation and day (desk_org_days); sums of revenue factors kept per window only

Revision ID: 3f6a9c2e8d14
Revises: 5e0b2d7c41a9
Create Date: 2026-12-03 11:30:00

desk_org_days holds votes per organisation, item and UTC day and importance: the desk filtered by an organisation
reads it instead of that organisation's votes, and a new revenue factor is summed again from it instead of the
vote rows (app/desk/aggregates.py). desk_days loses its sums of factors (the windows keep them; a day leaving a
window takes its factors from desk_org_days). The triggers are dropped; 2026-12-03-1605_desk_factor_generations
makes them again as app/desk/aggregates.py now writes them (they read columns this revision does not have) and
counts every aggregate from the votes with the revenue factor in force (portal setting `desk_weights`) where they
were never counted. (A database migrated before that revision existed had its triggers made and its aggregates
counted here.)

Downgrade: back to the tables of 8c1d5e7f9a20 without triggers (their code is no longer here); upgrading again
counts everything afresh.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.desk import aggregates

revision: str = "3f6a9c2e8d14"
down_revision: str | None = "5e0b2d7c41a9"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    conn = op.get_bind()
    aggregates.drop_triggers(conn)
    op.create_table(
        "desk_org_days",
        sa.Column("organisation_id", sa.Integer(), nullable=False), sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        *(sa.Column(n, sa.Integer(), nullable=False) for n in ("n1", "n2", "n3")),
        sa.PrimaryKeyConstraint("organisation_id", "item_id", "day", name=op.f("pk_desk_org_days")),
    )
    op.create_index("ix_desk_org_days_day", "desk_org_days", ["day"])
    with op.batch_alter_table("desk_days") as batch:
        for name in ("f1", "f2", "f3"):
            batch.drop_column(name)
    # The desk's tables are emptied: the next revision counts them again from the votes (no desk_state row).
    for table in ("desk_days", "desk_windows", "desk_item_orgs", "desk_spans", "desk_state"):
        conn.exec_driver_sql(f"DELETE FROM {table}")  # nosec B608  # our own table names


def downgrade() -> None:
    aggregates.drop_triggers(op.get_bind())
    with op.batch_alter_table("desk_days") as batch:
        for name in ("f1", "f2", "f3"):
            batch.add_column(sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    op.drop_index("ix_desk_org_days_day", table_name="desk_org_days")
    op.drop_table("desk_org_days")
