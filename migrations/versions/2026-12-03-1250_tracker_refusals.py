"""Tracker webhooks keep their last 20 refused deliveries (time and reason) in slots of their own, instead of a
count and the latest reason on the webhook's row (whose lock a valid delivery holds: a refusal waited on it).

The latest refusal a webhook counted is kept as its slot `refused_count % 20`, numbered `refused_count`.

Revision ID: 3f9a61c0d8e2
Revises: b71e4c90a2d3
Create Date: 2026-12-03 12:50
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = "3f9a61c0d8e2"
down_revision: str | None = "b71e4c90a2d3"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "tracker_refusals",
        sa.Column("hook_id", sa.Integer(), nullable=False),
        sa.Column("slot", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("refused_at", UTCDateTime(), nullable=False),
        sa.Column("reason", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(["hook_id"], ["tracker_hooks.id"], name=op.f("fk_tracker_refusals_hook_id_tracker_hooks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("hook_id", "slot", name=op.f("pk_tracker_refusals")),
    )
    op.execute(sa.text(  # slot = refused_count % 20 (app.tech.models.REFUSALS_KEPT when this was written)
        "INSERT INTO tracker_refusals (hook_id, slot, seq, refused_at, reason) "
        "SELECT id, refused_count % 20, refused_count, last_refused_at, last_refused_reason FROM tracker_hooks "
        "WHERE refused_count > 0 AND last_refused_at IS NOT NULL"))
    # SQLite's batch copy of the table would lose this expression index (it cannot be reflected): made again.
    op.drop_index("uq_tracker_hooks_name", table_name="tracker_hooks")
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.drop_column("last_refused_reason")
        batch.drop_column("last_refused_at")
        batch.drop_column("refused_count")
    op.create_index("uq_tracker_hooks_name", "tracker_hooks", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_tracker_hooks_name", table_name="tracker_hooks")
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.add_column(sa.Column("refused_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_refused_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_refused_reason", sa.String(200), nullable=False, server_default=""))
    op.create_index("uq_tracker_hooks_name", "tracker_hooks", [sa.text("lower(name)")], unique=True)
    op.execute(sa.text(
        "UPDATE tracker_hooks SET "
        "refused_count = COALESCE((SELECT MAX(r.seq) FROM tracker_refusals r WHERE r.hook_id = tracker_hooks.id), 0), "
        "last_refused_at = (SELECT r.refused_at FROM tracker_refusals r WHERE r.hook_id = tracker_hooks.id "
        "ORDER BY r.seq DESC LIMIT 1), "
        "last_refused_reason = COALESCE((SELECT r.reason FROM tracker_refusals r WHERE r.hook_id = tracker_hooks.id "
        "ORDER BY r.seq DESC LIMIT 1), '')"))
    op.drop_table("tracker_refusals")
