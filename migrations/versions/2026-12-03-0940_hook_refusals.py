"""Tracker webhooks count their refused deliveries, with the latest one's time and reason.

Revision ID: 5e0b2d7c41a9
Revises: c5d2e8a1f3b7
Create Date: 2026-12-03 09:40
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = "5e0b2d7c41a9"
down_revision: str | None = "c5d2e8a1f3b7"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.add_column(sa.Column("refused_count", sa.Integer(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("last_refused_at", UTCDateTime(), nullable=True))
        batch.add_column(sa.Column("last_refused_reason", sa.String(200), nullable=False, server_default=""))


def downgrade() -> None:
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.drop_column("last_refused_reason")
        batch.drop_column("last_refused_at")
        batch.drop_column("refused_count")
