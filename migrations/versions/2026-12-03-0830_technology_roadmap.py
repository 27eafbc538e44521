"""The technology roadmap: initiatives, backlog links, item delivery settings, tracker webhooks

Revision ID: 9a3c7e5b1d42
Revises: 8c1d2e3f4a5b
Create Date: 2026-12-03 08:30:00

New tables only; nothing existing changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import app.db

revision: str = '9a3c7e5b1d42'
down_revision: str | None = '8c1d2e3f4a5b'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "initiatives",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("owner_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("target_year", sa.SmallInteger(), nullable=True),
        sa.Column("target_quarter", sa.SmallInteger(), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["owner_id"], ["users.id"], name=op.f("fk_initiatives_owner_id_users"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_initiatives")),
    )
    op.create_index(op.f("ix_initiatives_owner_id"), "initiatives", ["owner_id"])
    op.create_table(
        "initiative_items",
        sa.Column("initiative_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["initiative_id"], ["initiatives.id"],
                                name=op.f("fk_initiative_items_initiative_id_initiatives"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_initiative_items_item_id_items"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("initiative_id", "item_id", name=op.f("pk_initiative_items")),
    )
    op.create_index(op.f("ix_initiative_items_item_id"), "initiative_items", ["item_id"])
    op.create_table(
        "backlog_links",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("initiative_id", sa.Integer(), nullable=True),
        sa.Column("item_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=200), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("status", sa.String(length=80), nullable=False),
        sa.Column("started", sa.Boolean(), nullable=False),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("estimate", sa.Numeric(8, 2), nullable=True),
        sa.Column("tracker_updated_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.CheckConstraint("(initiative_id IS NULL) <> (item_id IS NULL)", name=op.f("ck_backlog_links_one_owner")),
        sa.ForeignKeyConstraint(["initiative_id"], ["initiatives.id"],
                                name=op.f("fk_backlog_links_initiative_id_initiatives"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_backlog_links_item_id_items"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_backlog_links")),
    )
    op.create_index("ix_backlog_links_kind_key", "backlog_links", ["kind", "key"])
    op.create_index("uq_backlog_links_initiative_key", "backlog_links", ["initiative_id", "kind", "key"], unique=True)
    op.create_index("uq_backlog_links_item_key", "backlog_links", ["item_id", "kind", "key"], unique=True)
    op.create_table(
        "item_delivery",
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("show_progress", sa.Boolean(), nullable=False),
        sa.Column("started_stage_id", sa.Integer(), nullable=True),
        sa.Column("done_stage_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["items.id"], name=op.f("fk_item_delivery_item_id_items"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["started_stage_id"], ["stages.id"],
                                name=op.f("fk_item_delivery_started_stage_id_stages"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["done_stage_id"], ["stages.id"],
                                name=op.f("fk_item_delivery_done_stage_id_stages"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_item_delivery")),
    )
    op.create_table(
        "tracker_hooks",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("public_id", sa.String(length=32), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=80), nullable=False),
        sa.Column("salt", sa.String(length=64), nullable=False),
        sa.Column("created_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.Column("last_delivery_at", app.db.UTCDateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracker_hooks")),
        sa.UniqueConstraint("public_id", name=op.f("uq_tracker_hooks_public_id")),
    )
    op.create_table(
        "tracker_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("hook_id", sa.Integer(), nullable=False),
        sa.Column("delivery_key", sa.String(length=100), nullable=False),
        sa.Column("event", sa.String(length=80), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=500), nullable=False),
        sa.Column("matched", sa.Integer(), nullable=False),
        sa.Column("received_at", app.db.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["hook_id"], ["tracker_hooks.id"], name=op.f("fk_tracker_deliveries_hook_id_tracker_hooks"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracker_deliveries")),
    )
    op.create_index("ix_tracker_deliveries_hook_key", "tracker_deliveries", ["hook_id", "delivery_key"])
    op.create_index(op.f("ix_tracker_deliveries_received_at"), "tracker_deliveries", ["received_at"])


def downgrade() -> None:
    op.drop_table("tracker_deliveries")
    op.drop_table("tracker_hooks")
    op.drop_table("item_delivery")
    op.drop_table("backlog_links")
    op.drop_table("initiative_items")
    op.drop_table("initiatives")
