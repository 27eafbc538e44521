from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import Boolean, Column, ForeignKey, Index, Integer, Numeric, SmallInteger, String, Table, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, str_enum, utcnow
from app.organisations.models import Segment
from app.roadmap.timeframes import Timeframe, horizon_of_quarter, timeframe_label

# Why a merged item takes no votes: the vote widget, and a vote that lost the race with the merge.
MERGED_REASON = "Merged into another item — voting is closed"

class Visibility(StrEnum):
    public = "public"
    customers = "customers"
    internal = "internal"


class Confidence(StrEnum):
    low = "low"
    medium = "medium"
    high = "high"


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(80))
    description: Mapped[str] = mapped_column(Text, default="")
    position: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Stage(Base):
    """A step of the roadmap. `is_released` items reach the changelog; `is_closed` items take no votes."""

    __tablename__ = "stages"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(60))
    position: Mapped[int] = mapped_column(Integer, default=0)
    is_released: Mapped[bool] = mapped_column(Boolean, default=False)
    is_closed: Mapped[bool] = mapped_column(Boolean, default=False)
    on_board: Mapped[bool] = mapped_column(Boolean, default=True)


class Tag(Base):
    __tablename__ = "tags"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(60), unique=True)
    name: Mapped[str] = mapped_column(String(60))


item_tags = Table(
    "item_tags",
    Base.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("tag_id", ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True, index=True),
)


item_segments = Table(
    "item_segments",
    Base.metadata,
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True),
    Column("segment_id", ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True, index=True),
)


def item_path(public_id: str, slug: str) -> str:
    """An item's page: its public id, then its slug when it has one."""
    return f"/items/{public_id}/{slug}" if slug else f"/items/{public_id}"


class Item(Base):
    """A roadmap item. `id` never leaves the server; public URLs use the random `public_id`."""

    __tablename__ = "items"
    __table_args__ = (
        Index("ix_items_board", "stage_id", "published_at"),
        Index("ix_items_product_stage", "product_id", "stage_id"),
        # Covers the board's column totals: counting a stage's visible items reads only this index.
        Index("ix_items_stage_visible", "stage_id", "visibility", "published_at", "merged_into_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(16), unique=True)
    slug: Mapped[str] = mapped_column(String(80), default="")
    product_id: Mapped[int] = mapped_column(ForeignKey("products.id", ondelete="RESTRICT"))
    stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="RESTRICT"))
    title: Mapped[str] = mapped_column(String(200))
    summary: Mapped[str] = mapped_column(String(300), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    internal_notes: Mapped[str] = mapped_column(Text, default="")
    release_notes: Mapped[str] = mapped_column(Text, default="")
    timeframe: Mapped[Timeframe] = mapped_column(str_enum(Timeframe, 10), default=Timeframe.later)
    target_year: Mapped[int | None] = mapped_column(SmallInteger)
    target_quarter: Mapped[int | None] = mapped_column(SmallInteger)
    confidence: Mapped[Confidence | None] = mapped_column(str_enum(Confidence, 10))
    # RICE inputs the PM enters on the prioritisation desk (None: not estimated, shown as "—"):
    # confidence in percent (1-100; not the timeframe's `confidence` above) and effort in person-months.
    rice_confidence: Mapped[int | None] = mapped_column(SmallInteger)
    effort: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    visibility: Mapped[Visibility] = mapped_column(str_enum(Visibility, 16), default=Visibility.public)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    released_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"))
    # Kept in the vote's own transaction; `ahead reconcile` proves it equals the vote rows.
    vote_count: Mapped[int] = mapped_column(Integer, default=0)
    # Votes cast in the last 30 days, for the "trending" sort; refreshed by `ahead reconcile`/the worker.
    trend_count: Mapped[int] = mapped_column(Integer, default=0)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)

    product: Mapped[Product] = relationship(lazy="raise")
    stage: Mapped[Stage] = relationship(lazy="raise")
    tags: Mapped[list[Tag]] = relationship(secondary=item_tags, lazy="raise", order_by=Tag.name)
    # With visibility `customers`: limited to these segments (none means every signed-in customer).
    segments: Mapped[list[Segment]] = relationship(secondary=item_segments, lazy="raise", order_by=Segment.name)

    @property
    def is_published(self) -> bool:
        return self.published_at is not None

    @property
    def timeframe_label(self) -> str:
        return timeframe_label(self.timeframe, self.target_year, self.target_quarter)

    @property
    def planned_timeframe(self) -> str | None:
        """The timeframe while the item is still ahead; None once released or declined (the stage must be loaded).

        A shipped item says when it shipped (`released_at`), a declined one says nothing about when.
        """
        if self.stage.is_released or self.stage.is_closed:
            return None
        return self.timeframe_label

    @property
    def horizon(self) -> Timeframe:
        """Now / Next / Later, with a target quarter placed by how far away it is."""
        if self.timeframe is not Timeframe.quarter:
            return self.timeframe
        return horizon_of_quarter(self.target_year, self.target_quarter)

    @property
    def path(self) -> str:
        return item_path(self.public_id, self.slug)

    def can_be_voted(self) -> bool:
        """Released, declined (closed stages) and merged items take no votes. The stage must be loaded."""
        return self.voting_closed_reason() is None

    def voting_closed_reason(self) -> str | None:
        """Why this item takes no votes, as the vote widget and a refused vote say it; None when it does."""
        if self.merged_into_id is not None:
            return MERGED_REASON
        if self.stage.is_closed:
            return f"{self.stage.name} — voting is closed"
        return None


class StageChange(Base):
    """One move between stages: the item's public timeline."""

    __tablename__ = "stage_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    to_stage_id: Mapped[int] = mapped_column(ForeignKey("stages.id", ondelete="CASCADE"))
    changed_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    changed_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    from_stage: Mapped[Stage | None] = relationship(foreign_keys=[from_stage_id], lazy="raise")
    to_stage: Mapped[Stage] = relationship(foreign_keys=[to_stage_id], lazy="raise")
