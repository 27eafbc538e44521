from __future__ import annotations

from datetime import datetime
from enum import IntEnum, StrEnum
from typing import Any, Literal, cast

from sqlalchemy import JSON, ForeignKey, Index, SmallInteger, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, str_enum, utcnow

ImportanceKey = Literal["nice_to_have", "important", "critical"]  # Importance's names, what forms and the API say


class Importance(IntEnum):
    """How much an item matters to the voter; the value is its default weight."""

    nice_to_have = 1
    important = 2
    critical = 3

    @property
    def label(self) -> str:
        return {1: "Nice to have", 2: "Important", 3: "Critical"}[self.value]

    @property
    def key(self) -> ImportanceKey:
        return cast(ImportanceKey, self.name)


class CaptureSource(StrEnum):
    call = "call"
    ticket = "ticket"
    meeting = "meeting"
    email = "email"


class Vote(Base):
    """One vote per user per item, enforced by the unique key; `items.vote_count` mirrors the rows."""

    __tablename__ = "votes"
    __table_args__ = (
        UniqueConstraint("item_id", "user_id"),
        Index("ix_votes_item_created", "item_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    importance: Mapped[int] = mapped_column(SmallInteger, default=Importance.important)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A vote a PM recorded for a customer: who captured it, from where.
    captured_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    source: Mapped[CaptureSource | None] = mapped_column(str_enum(CaptureSource, 10))
    source_url: Mapped[str] = mapped_column(String(500), default="")


class Follow(Base):
    """Who hears about an item. Voting and commenting follow it.

    A row with `stopped_at` set is an opt-out: the person pressed Unfollow (or the one-click unsubscribe of an
    email about the item) and hears nothing more about it, although they voted or commented. A new vote, a new
    comment or Follow ends it (each follows the item again); changing an existing vote's importance does not.
    """

    __tablename__ = "follows"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    stopped_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Merge(Base):
    """Item B merged into item A, with exactly what moved, so that the merge can be undone."""

    __tablename__ = "merges"

    id: Mapped[int] = mapped_column(primary_key=True)
    source_item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    target_item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    merged_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    merged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    undone_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    undone_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    # {"moved_votes": [...ids], "dropped_votes": [{...row}], "raised_votes": [{"id", "from"}],
    #  "moved_comments": [...], "moved_feedback": [...], "moved_follows": [...user ids], ...}
    record: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
