"""Decisions on record: a PM's stage move with its reason and the desk's numbers at that moment."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow
from app.roadmap.models import Item


class Decision(Base):
    """One stage move made by staff, with why (optional) and a snapshot of the item's desk numbers (all-time
    window) and of the weights in force. The stage names and the person are copied too, so the record reads the
    same after a stage is renamed or the person leaves: it is what makes a priority defensible months later."""

    __tablename__ = "decisions"
    __table_args__ = (Index("ix_decisions_decided_at", "decided_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    from_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    to_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"), index=True)
    from_stage_name: Mapped[str] = mapped_column(String(80), default="")
    to_stage_name: Mapped[str] = mapped_column(String(80), default="")
    why: Mapped[str] = mapped_column(Text, default="")
    decided_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    decided_by_label: Mapped[str] = mapped_column(String(320), default="")
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    numbers: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)

    item: Mapped[Item] = relationship(lazy="raise")
