"""Decisions on record: a stage move's reason with the desk's numbers and weights at that moment

Revision ID: 9e4d2c7b1a58
Revises: 8e0c2a7f51d3
Create Date: 2026-12-03 08:20:00

A new table only; no existing row changes. Moves made before this revision have no decision (their stage
history stays where it was, in `stage_changes`).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = '9e4d2c7b1a58'
down_revision: str | None = '8e0c2a7f51d3'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("from_stage_id", sa.Integer(), nullable=True),
        sa.Column("to_stage_id", sa.Integer(), nullable=True),
        sa.Column("from_stage_name", sa.String(length=80), nullable=False),
        sa.Column("to_stage_name", sa.String(length=80), nullable=False),
        sa.Column("why", sa.Text(), nullable=False),
        sa.Column("decided_by_id", sa.Integer(), nullable=True),
        sa.Column("decided_by_label", sa.String(length=320), nullable=False),
        sa.Column("decided_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("numbers", sa.JSON(), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_decisions_item_id_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["from_stage_id"], ["stages.id"], name=op.f("fk_decisions_from_stage_id_stages"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["to_stage_id"], ["stages.id"], name=op.f("fk_decisions_to_stage_id_stages"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["decided_by_id"], ["users.id"], name=op.f("fk_decisions_decided_by_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_decisions")),
    )
    op.create_index(op.f("ix_decisions_item_id"), "decisions", ["item_id"])
    op.create_index(op.f("ix_decisions_to_stage_id"), "decisions", ["to_stage_id"])
    op.create_index(op.f("ix_decisions_decided_by_id"), "decisions", ["decided_by_id"])
    op.create_index("ix_decisions_decided_at", "decisions", ["decided_at"])


def downgrade() -> None:
    op.drop_table("decisions")
