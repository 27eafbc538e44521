"""The outbox: one row per delivery job (email, webhook call, fan-out step)

Revision ID: 8e0c2a7f51d3
Revises: 5b2e9f4c7a61
Create Date: 2026-12-03 08:10:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = '8e0c2a7f51d3'
down_revision: str | None = '5b2e9f4c7a61'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "outbox_jobs",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("kind", sa.String(60), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("state", sa.String(10), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("claimed_by", sa.String(120), nullable=True),
        sa.Column("claimed_until", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_outbox_jobs"),
        sa.UniqueConstraint("key", name="uq_outbox_jobs_key"),
    )
    op.create_index("ix_outbox_jobs_due", "outbox_jobs", ["state", "next_attempt_at"])
    op.create_index("ix_outbox_jobs_finished", "outbox_jobs", ["finished_at"])


def downgrade() -> None:
    op.drop_index("ix_outbox_jobs_finished", table_name="outbox_jobs")
    op.drop_index("ix_outbox_jobs_due", table_name="outbox_jobs")
    op.drop_table("outbox_jobs")
