"""The desk's revenue factor in generations: a new factor is summed beside the current one, a range of items per
transaction, so votes never wait for the whole re-sum

desk_windows gets a second set of sums of factors (g1-g3: the odd generations; f1-f3 the even ones), desk_state the
generation number and the next factor being filled (next_revenue_*, next_through: the items filled so far), and
desk_org_days an index on item_id (each batch reads a range of items). The triggers are made again as
app/desk/aggregates.py now writes them (the current generation is 0: f1-f3 as they are). Where the aggregates were
never counted (no desk_state row: a database coming from before 2026-12-03-1130_desk_org_days) they are counted
from the votes with the revenue factor in force (portal setting `desk_weights`).

Revision ID: 6b2e9d4f1a37
Revises: 7e31c8ec1506
Create Date: 2026-12-03 16:05

Downgrade: the columns and the index go, and the triggers with them (their code is no longer here); upgrading
again makes them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from decimal import Decimal

import sqlalchemy as sa
from alembic import op

from app.desk import aggregates

revision: str = "6b2e9d4f1a37"
down_revision: str | None = "7e31c8ec1506"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NEXT_COLUMNS = ("next_revenue_mode", "next_revenue_unit", "next_revenue_cap", "next_through")


def _revenue_factor(conn: sa.Connection) -> tuple[str, Decimal, Decimal]:
    raw = conn.execute(sa.text("SELECT value FROM portal_settings WHERE key = 'desk_weights'")).scalar()
    weights = raw if isinstance(raw, dict) else json.loads(raw) if isinstance(raw, str) else {}
    try:
        return (str(weights.get("revenue_mode", "off")), Decimal(str(weights.get("revenue_unit", 100_000))),
                Decimal(str(weights.get("revenue_cap", 3))))
    except (ArithmeticError, ValueError):
        return "off", Decimal(100_000), Decimal(3)


def upgrade() -> None:
    conn = op.get_bind()
    aggregates.drop_triggers(conn)
    for name in ("g1", "g2", "g3"):
        op.add_column("desk_windows", sa.Column(name, sa.Float(), nullable=False, server_default="0"))
    op.add_column("desk_state", sa.Column("generation", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("desk_state", sa.Column("next_revenue_mode", sa.String(length=20), nullable=True))
    op.add_column("desk_state", sa.Column("next_revenue_unit", sa.Numeric(16, 3), nullable=True))
    op.add_column("desk_state", sa.Column("next_revenue_cap", sa.Numeric(10, 3), nullable=True))
    op.add_column("desk_state", sa.Column("next_through", sa.Integer(), nullable=True))
    op.create_index("ix_desk_org_days_item", "desk_org_days", ["item_id"])
    aggregates.create_triggers(conn)
    if conn.exec_driver_sql("SELECT count(*) FROM desk_state").scalar() == 0:
        mode, unit, cap = _revenue_factor(conn)
        aggregates.rebuild(conn, today=datetime.now(UTC).date(), revenue_mode=mode, revenue_unit=unit,
                           revenue_cap=cap)


def downgrade() -> None:
    aggregates.drop_triggers(op.get_bind())
    op.drop_index("ix_desk_org_days_item", table_name="desk_org_days")
    with op.batch_alter_table("desk_state") as batch:
        for name in ("generation", *NEXT_COLUMNS):
            batch.drop_column(name)
    with op.batch_alter_table("desk_windows") as batch:
        for name in ("g1", "g2", "g3"):
            batch.drop_column(name)
