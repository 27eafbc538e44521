"""Visitors who subscribed to the changelog by email and confirmed it (double opt-in).

Revision ID: b71e4c90a2d3
Revises: 8c4f1a2d9e57
Create Date: 2026-12-03 12:20
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = "b71e4c90a2d3"
down_revision: str | None = "8c4f1a2d9e57"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changelog_subscribers",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("unsubscribed_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_changelog_subscribers")),
        sa.UniqueConstraint("email", name=op.f("uq_changelog_subscribers_email")),
    )


def downgrade() -> None:
    op.drop_table("changelog_subscribers")
