"""The desk's aggregates: per-day and per-window vote sums, organisations per item, kept by triggers

Revision ID: 8c1d5e7f9a20
Revises: 9a3c7e5b1d42
Create Date: 2026-12-03 08:50:00

Creates desk_days, desk_windows, desk_item_orgs, desk_spans and desk_state (app/desk/models.py). The triggers that
keep them equal to the vote rows and their backfill are made by the latest migration that changes them
(2026-12-03-1130_desk_org_days): they are app/desk/aggregates.py as it is now, which reads tables this revision
does not have yet. (This revision made them itself until then; a database past it already has them.)
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.desk import aggregates

revision: str = '8c1d5e7f9a20'
down_revision: str | None = '9a3c7e5b1d42'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None



def _counts() -> list[sa.Column]:
    return [*(sa.Column(n, sa.Integer(), nullable=False) for n in ("n1", "n2", "n3")),
            *(sa.Column(n, sa.Float(), nullable=False) for n in ("f1", "f2", "f3")),
            sa.Column("lone", sa.Integer(), nullable=False)]


def upgrade() -> None:
    op.create_table(
        "desk_days",
        sa.Column("item_id", sa.Integer(), nullable=False), sa.Column("day", sa.Date(), nullable=False),
        sa.Column("seg", sa.Integer(), nullable=False), *_counts(),
        sa.PrimaryKeyConstraint("item_id", "day", "seg", name=op.f("pk_desk_days")),
    )
    op.create_index("ix_desk_days_day", "desk_days", ["day"])
    op.create_table(
        "desk_windows",
        sa.Column("span", sa.SmallInteger(), nullable=False), sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("seg", sa.Integer(), nullable=False), *_counts(),
        sa.Column("orgs", sa.Integer(), nullable=False), sa.Column("revenue", sa.Numeric(18, 2), nullable=False),
        sa.PrimaryKeyConstraint("span", "item_id", "seg", name=op.f("pk_desk_windows")),
    )
    op.create_table(
        "desk_item_orgs",
        sa.Column("item_id", sa.Integer(), nullable=False), sa.Column("organisation_id", sa.Integer(), nullable=False),
        sa.Column("voters", sa.Integer(), nullable=False), sa.Column("latest_day", sa.Date(), nullable=False),
        sa.Column("seg", sa.Integer(), nullable=False), sa.Column("revenue", sa.Numeric(14, 2), nullable=False),
        sa.PrimaryKeyConstraint("item_id", "organisation_id", name=op.f("pk_desk_item_orgs")),
    )
    op.create_index("ix_desk_item_orgs_org", "desk_item_orgs", ["organisation_id"])
    op.create_index("ix_desk_item_orgs_latest", "desk_item_orgs", ["latest_day"])
    op.create_table(
        "desk_spans",
        sa.Column("span", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("since", sa.Date(), nullable=False),
        sa.PrimaryKeyConstraint("span", name=op.f("pk_desk_spans")),
    )
    op.create_table(
        "desk_state",
        sa.Column("id", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("revenue_mode", sa.String(length=20), nullable=False),
        sa.Column("revenue_unit", sa.Numeric(16, 3), nullable=False),
        sa.Column("revenue_cap", sa.Numeric(10, 3), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_desk_state")),
    )


def downgrade() -> None:
    aggregates.drop_triggers(op.get_bind())
    for table in ("desk_state", "desk_spans", "desk_item_orgs", "desk_windows", "desk_days"):
        op.drop_table(table)
