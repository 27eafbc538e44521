"""RICE inputs a PM enters on an item: confidence (percent) and effort (person-months)

Revision ID: 3d8f41c0a7e2
Revises: 7c1e5a9d2b40
Create Date: 2026-12-03 06:00:00

Both nullable: an item nobody has estimated shows "—" on the prioritisation desk, not zero. Not the
same as `items.confidence` (low / medium / high), which says how sure the team is of the timeframe.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '3d8f41c0a7e2'
down_revision: str | None = '7c1e5a9d2b40'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.add_column(sa.Column("rice_confidence", sa.SmallInteger(), nullable=True))
        batch.add_column(sa.Column("effort", sa.Numeric(8, 2), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("items") as batch:
        batch.drop_column("effort")
        batch.drop_column("rice_confidence")
