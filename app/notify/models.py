"""Who is told what: each person's choice per kind of event, and the changes waiting for their weekly digest."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, str_enum, utcnow


class EventKind(StrEnum):
    """The kinds of event a person chooses about (one row of the preferences form each)."""

    stage = "stage"  # an item they follow moves to another stage
    released = "released"  # ... is released (with the release notes)
    declined = "declined"  # ... is declined (with the reason)
    answer = "answer"  # the product team answers officially on an item they follow
    idea = "idea"  # what became of an idea they suggested
    reply = "reply"  # someone replies to their comment
    changelog = "changelog"  # an entry is published on the changelog (opt-in: no row means never)


class Delivery(StrEnum):
    immediately = "immediately"
    weekly = "weekly"
    never = "never"


class NotificationPreference(Base):
    """A person's choice for one kind of event; no row means `immediately`."""

    __tablename__ = "notification_preferences"

    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), primary_key=True)
    kind: Mapped[EventKind] = mapped_column(str_enum(EventKind, 16), primary_key=True)
    delivery: Mapped[Delivery] = mapped_column(str_enum(Delivery, 16), default=Delivery.immediately)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class DigestEntry(Base):
    """One change waiting for a person's weekly digest; `sent_at` is set when the digest that carried it went out.

    `event_key` is the event's own key: the fan-out may run twice (a worker dies mid-batch), the entry is
    written once.
    """

    __tablename__ = "digest_entries"
    __table_args__ = (
        UniqueConstraint("user_id", "event_key"),
        Index("ix_digest_entries_pending", "sent_at", "user_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), index=True)
    kind: Mapped[EventKind] = mapped_column(str_enum(EventKind, 16))
    event_key: Mapped[str] = mapped_column(String(120))
    # What the digest says about it: {"headline", "title", "path", "text"} (text: Markdown, may be empty).
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ChangelogSubscriber(Base):
    """An address that asked for the changelog by email without an account, and confirmed it (double opt-in).

    Nothing is stored for an address until its owner clicks the confirmation link: asking costs the asker an
    email to that address, never a row. `confirmed_at` None: unsubscribed (`unsubscribed_at` says when). A
    confirmation link made before the latest of the two is void, which makes each link single-use.
    """

    __tablename__ = "changelog_subscribers"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # as email-validator normalised it, lower case
    confirmed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    unsubscribed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
