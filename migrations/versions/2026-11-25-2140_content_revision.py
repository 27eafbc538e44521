"""content revision: the number every process's page and settings caches are keyed on

Revision ID: 7c1e5a9d2b40
Revises: 50067dc78035
Create Date: 2026-11-25 21:40:00

Sixteen rows, set to a random value by any transaction that changes what a page shows; their sum is
the revision (app/revision.py explains why random values and why sixteen rows). Also the index the
board's column totals need: counting a stage's visible items reads only the index.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '7c1e5a9d2b40'
down_revision: str | None = '50067dc78035'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARDS = 16


def upgrade() -> None:
    table = op.create_table(
        "content_revisions",
        sa.Column("shard", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("shard", name=op.f("pk_content_revisions")),
    )
    op.bulk_insert(table, [{"shard": shard, "value": 0} for shard in range(SHARDS)])
    op.create_index("ix_items_stage_visible", "items", ["stage_id", "visibility", "published_at", "merged_into_id"])


def downgrade() -> None:
    op.drop_index("ix_items_stage_visible", table_name="items")
    op.drop_table("content_revisions")
