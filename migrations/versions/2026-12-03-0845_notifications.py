"""Who is told what: opt-outs on follows, preferences per kind of event, the weekly digest's waiting entries

Revision ID: 8c1d2e3f4a5b
Revises: a41c7e2d9b15
Create Date: 2026-12-03 08:10:00

`follows.stopped_at` marks a person who stopped following an item (Unfollow, or the one-click unsubscribe of
an email): they hear nothing more about it although they voted or commented. Until now Unfollow deleted the
row; those people voted or commented before and would be told again, so nothing to carry over.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = '8c1d2e3f4a5b'
down_revision: str | None = 'a41c7e2d9b15'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("follows") as batch:
        batch.add_column(sa.Column("stopped_at", UTCDateTime(timezone=True), nullable=True))
    op.create_table(
        "notification_preferences",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("delivery", sa.String(length=16), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_notification_preferences_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "kind", name=op.f("pk_notification_preferences")),
    )
    op.create_table(
        "digest_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("event_key", sa.String(length=120), nullable=False),
        sa.Column("summary", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("sent_at", UTCDateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_digest_entries_item_id_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_digest_entries_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_digest_entries")),
        sa.UniqueConstraint("user_id", "event_key", name=op.f("uq_digest_entries_user_id_event_key")),
    )
    op.create_index("ix_digest_entries_pending", "digest_entries", ["sent_at", "user_id"])
    op.create_index(op.f("ix_digest_entries_item_id"), "digest_entries", ["item_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_digest_entries_item_id"), table_name="digest_entries")
    op.drop_index("ix_digest_entries_pending", table_name="digest_entries")
    op.drop_table("digest_entries")
    op.drop_table("notification_preferences")
    with op.batch_alter_table("follows") as batch:
        batch.drop_column("stopped_at")
