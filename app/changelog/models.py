"""The changelog: entries a product manager writes over released items.

An entry groups released items under a title and notes of its own. A released item that no published entry
holds stands on the changelog by itself, with its release notes (the default: one per item), so an entry is
only written when the team has something to say about several items together.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, ForeignKey, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow
from app.roadmap.models import Item, Product

# One entry per item at most (the item is the primary key): an item is announced once.
changelog_entry_items = Table(
    "changelog_entry_items",
    Base.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("entry_id", ForeignKey("changelog_entries.id", ondelete="CASCADE"), nullable=False, index=True),
)


class ChangelogEntry(Base):
    """`published_at`: None for a draft, in the future while scheduled, in the past once published."""

    __tablename__ = "changelog_entries"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    slug: Mapped[str] = mapped_column(String(80), default="")
    title: Mapped[str] = mapped_column(String(200))
    notes: Mapped[str] = mapped_column(Text, default="")
    # The product it is about; None: the whole portal. The product's changelog also lists an entry holding
    # one of its items.
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"), index=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    product: Mapped[Product | None] = relationship(lazy="raise")
    items: Mapped[list[Item]] = relationship(secondary=changelog_entry_items, lazy="raise",
                                             order_by=Item.released_at.desc())

    @property
    def path(self) -> str:
        return f"/changelog/{self.public_id}/{self.slug}" if self.slug else f"/changelog/{self.public_id}"

    def state(self, now: datetime) -> str:
        """draft, scheduled or published."""
        if self.published_at is None:
            return "draft"
        return "scheduled" if self.published_at > now else "published"
