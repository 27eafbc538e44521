"""Changelog entries: a title and notes over several released items, draft, scheduled or published

Revision ID: a41c7e2d9b15
Revises: 4a7f0e2d9c13
Create Date: 2026-12-03 08:35:00

No rows are made: a released item that no published entry holds stands on the changelog by itself, as
every released item did before.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.db import UTCDateTime

revision: str = 'a41c7e2d9b15'
down_revision: str | None = '4a7f0e2d9c13'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "changelog_entries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(16), nullable=False),
        sa.Column("slug", sa.String(80), nullable=False),
        sa.Column("title", sa.String(200), nullable=False),
        sa.Column("notes", sa.Text(), nullable=False),
        sa.Column("product_id", sa.Integer(), nullable=True),
        sa.Column("published_at", UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_by_id", sa.Integer(), nullable=True),
        sa.Column("created_at", UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["product_id"], ["products.id"], ondelete="SET NULL",
                                name="fk_changelog_entries_product_id_products"),
        sa.ForeignKeyConstraint(["created_by_id"], ["users.id"], ondelete="SET NULL",
                                name="fk_changelog_entries_created_by_id_users"),
        sa.PrimaryKeyConstraint("id", name="pk_changelog_entries"),
        sa.UniqueConstraint("public_id", name="uq_changelog_entries_public_id"),
    )
    op.create_index("ix_changelog_entries_product_id", "changelog_entries", ["product_id"])
    op.create_index("ix_changelog_entries_published_at", "changelog_entries", ["published_at"])
    op.create_table(
        "changelog_entry_items",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("entry_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], ondelete="CASCADE",
                                name="fk_changelog_entry_items_item_id_items"),
        sa.ForeignKeyConstraint(["entry_id"], ["changelog_entries.id"], ondelete="CASCADE",
                                name="fk_changelog_entry_items_entry_id_changelog_entries"),
        sa.PrimaryKeyConstraint("item_id", name="pk_changelog_entry_items"),
    )
    op.create_index("ix_changelog_entry_items_entry_id", "changelog_entry_items", ["entry_id"])


def downgrade() -> None:
    op.drop_index("ix_changelog_entry_items_entry_id", table_name="changelog_entry_items")
    op.drop_table("changelog_entry_items")
    op.drop_index("ix_changelog_entries_published_at", table_name="changelog_entries")
    op.drop_index("ix_changelog_entries_product_id", table_name="changelog_entries")
    op.drop_table("changelog_entries")
