"""One "tell us why" reason per person and item: duplicates collapsed to the newest, then a unique index

Revision ID: 5b2e9f4c7a61
Revises: 3d8f41c0a7e2
Create Date: 2026-12-03 06:15:00

Each "Update my vote" with text used to add another reason; now the one reason is edited in place. Rows of
the same author on the same item are collapsed to the newest (by created_at, then id) before the partial
unique index (kind = 'reason') is made. Deleted rows do not come back on downgrade, which drops the index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '5b2e9f4c7a61'
down_revision: str | None = '3d8f41c0a7e2'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REASON = sa.text("kind = 'reason'")


def upgrade() -> None:
    # Portable SQL (SQLite and PostgreSQL): a reason goes when a newer one of the same author on the same item
    # exists. Rows without an item or an author (deleted since) are not duplicates of anything.
    op.execute(sa.text(
        "DELETE FROM feedback WHERE kind = 'reason' AND item_id IS NOT NULL AND author_id IS NOT NULL "
        "AND EXISTS (SELECT 1 FROM feedback AS newer WHERE newer.kind = 'reason' "
        "AND newer.item_id = feedback.item_id AND newer.author_id = feedback.author_id "
        "AND (newer.created_at > feedback.created_at "
        "OR (newer.created_at = feedback.created_at AND newer.id > feedback.id)))"
    ))
    op.create_index("uq_feedback_reason", "feedback", ["item_id", "author_id"], unique=True,
                    sqlite_where=REASON, postgresql_where=REASON)


def downgrade() -> None:
    op.drop_index("uq_feedback_reason", table_name="feedback")
