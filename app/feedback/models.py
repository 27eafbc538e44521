from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, Index, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, str_enum, utcnow
from app.voting.models import CaptureSource


class FeedbackKind(StrEnum):
    idea = "idea"  # something new a customer proposes
    reason = "reason"  # "tell us why", given with a vote
    note = "note"  # other private feedback, or captured by a PM


class FeedbackState(StrEnum):
    new = "new"
    linked = "linked"
    archived = "archived"
    declined = "declined"


class Feedback(Base):
    """Private words for the product team; never shown on public pages."""

    __tablename__ = "feedback"
    __table_args__ = (
        Index("ix_feedback_state_created", "state", "created_at"),
        # One "tell us why" reason per person and item: editing it changes that row (feedback.save_reason).
        Index("uq_feedback_reason", "item_id", "author_id", unique=True, sqlite_where=text("kind = 'reason'"),
              postgresql_where=text("kind = 'reason'")),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[FeedbackKind] = mapped_column(str_enum(FeedbackKind, 10))
    state: Mapped[FeedbackState] = mapped_column(str_enum(FeedbackState, 10), default=FeedbackState.new)
    author_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    organisation_id: Mapped[int | None] = mapped_column(ForeignKey("organisations.id", ondelete="SET NULL"),
                                                        index=True)
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="SET NULL"), index=True)
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(200), default="")
    body: Mapped[str] = mapped_column(Text, default="")
    decline_reason: Mapped[str] = mapped_column(Text, default="")
    captured_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    source: Mapped[CaptureSource | None] = mapped_column(str_enum(CaptureSource, 10))
    source_url: Mapped[str] = mapped_column(String(500), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
