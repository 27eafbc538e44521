"""Initiatives, backlog links, the item's delivery settings, tracker webhooks and their deliveries."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    SmallInteger,
    String,
    Table,
    Text,
    func,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.accounts.models import User
from app.db import Base, UTCDateTime, str_enum, utcnow
from app.roadmap.models import Item


class InitiativeStatus(StrEnum):
    proposed = "proposed"
    active = "active"
    done = "done"
    dropped = "dropped"


class TrackerKind(StrEnum):
    github = "github"
    gitlab = "gitlab"
    jira = "jira"
    linear = "linear"


class HookKind(StrEnum):
    """Where a webhook comes from: a tracker's own format, or Ahead's generic one (any automation)."""

    github = "github"
    gitlab = "gitlab"
    jira = "jira"
    generic = "generic"


class DeliveryOutcome(StrEnum):
    matched = "matched"  # it changed at least one link
    ignored = "ignored"  # understood, but nothing to change (no such link, older news, a duplicate)


initiative_items = Table(
    "initiative_items",
    Base.metadata,
    Column("initiative_id", ForeignKey("initiatives.id", ondelete="CASCADE"), primary_key=True),
    Column("item_id", ForeignKey("items.id", ondelete="CASCADE"), primary_key=True, index=True),
)


class Initiative(Base):
    __tablename__ = "initiatives"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    owner_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"), index=True)
    status: Mapped[InitiativeStatus] = mapped_column(str_enum(InitiativeStatus, 16), default=InitiativeStatus.proposed)
    target_year: Mapped[int | None] = mapped_column(SmallInteger)
    target_quarter: Mapped[int | None] = mapped_column(SmallInteger)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    owner: Mapped[User | None] = relationship(lazy="raise")
    items: Mapped[list[Item]] = relationship(secondary=initiative_items, lazy="raise", order_by=Item.title)

    @property
    def quarter_label(self) -> str:
        if self.target_year and self.target_quarter:
            return f"{self.target_year} Q{self.target_quarter}"
        return "No quarter"


class BacklogLink(Base):
    """One tracker issue (or pull/merge request) that implements an initiative or an item.

    `tracker_updated_at` is the tracker's own last-change time of the issue, as the last delivery that
    changed this link said it: a delivery that is not newer changes nothing (out-of-order, replayed).
    """

    __tablename__ = "backlog_links"
    __table_args__ = (
        CheckConstraint("(initiative_id IS NULL) <> (item_id IS NULL)", name="one_owner"),
        Index("ix_backlog_links_kind_key", "kind", "key"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    initiative_id: Mapped[int | None] = mapped_column(ForeignKey("initiatives.id", ondelete="CASCADE"))
    item_id: Mapped[int | None] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    kind: Mapped[TrackerKind] = mapped_column(str_enum(TrackerKind, 16))
    key: Mapped[str] = mapped_column(String(200))
    url: Mapped[str] = mapped_column(String(2000), default="")
    title: Mapped[str] = mapped_column(String(300), default="")
    status: Mapped[str] = mapped_column(String(80), default="")
    started: Mapped[bool] = mapped_column(Boolean, default=False)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    estimate: Mapped[Decimal | None] = mapped_column(Numeric(8, 2))
    tracker_updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# One issue once per initiative and once per item, whatever the letter case of a GitHub/GitLab path: the database
# enforces it, since two requests at the same instant both pass the service's look-up. Jira and Linear keys are
# upper case by their format (trackers.KEY_FORMATS), so lower() folds only what is meant to be folded.
Index("uq_backlog_links_initiative_key", BacklogLink.initiative_id, BacklogLink.kind, func.lower(BacklogLink.key),
      unique=True)
Index("uq_backlog_links_item_key", BacklogLink.item_id, BacklogLink.kind, func.lower(BacklogLink.key), unique=True)


class ItemDelivery(Base):
    """An item's delivery settings: the public progress bar, and the stage moves its links may make."""

    __tablename__ = "item_delivery"

    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"), primary_key=True)
    show_progress: Mapped[bool] = mapped_column(Boolean, default=False)
    # "When the first link starts, move the item to ..." / "when every link is done, move it to ...".
    started_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))
    done_stage_id: Mapped[int | None] = mapped_column(ForeignKey("stages.id", ondelete="SET NULL"))


class TrackerHook(Base):
    """An inbound webhook configured by staff. The secret is not stored: it is derived from SECRET_KEY and
    `salt` (HMAC), shown once when the hook is made; a copy of the database alone cannot sign a delivery."""

    __tablename__ = "tracker_hooks"

    id: Mapped[int] = mapped_column(primary_key=True)
    public_id: Mapped[str] = mapped_column(String(32), unique=True)
    kind: Mapped[HookKind] = mapped_column(str_enum(HookKind, 16))
    name: Mapped[str] = mapped_column(String(80))
    # The only tracker whose links this webhook's deliveries may update: a tracker's own hook its own kind; a
    # generic hook the one chosen when it was made (NULL: any tracker, a generic hook made before this existed).
    tracker: Mapped[TrackerKind | None] = mapped_column(str_enum(TrackerKind, 16))
    # Optionally narrower: repositories / owners (GitHub), projects / groups (GitLab), project keys (Jira,
    # Linear), separated by spaces; "" for the whole tracker. See trackers.in_scope.
    scope: Mapped[str] = mapped_column(String(300), default="", server_default="")
    salt: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_delivery_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


# A name is a webhook's handle in the admin (and in its deliveries' log): unique in any letter case.
Index("uq_tracker_hooks_name", func.lower(TrackerHook.name), unique=True)


class TrackerDelivery(Base):
    """A delivery that passed its signature check, and what it did. `delivery_key` is the tracker's delivery
    id (or the body's SHA-256 when the tracker sends none): the same key twice changes nothing."""

    __tablename__ = "tracker_deliveries"
    __table_args__ = (Index("ix_tracker_deliveries_hook_key", "hook_id", "delivery_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    hook_id: Mapped[int] = mapped_column(ForeignKey("tracker_hooks.id", ondelete="CASCADE"))
    delivery_key: Mapped[str] = mapped_column(String(100))
    event: Mapped[str] = mapped_column(String(80), default="")
    outcome: Mapped[DeliveryOutcome] = mapped_column(str_enum(DeliveryOutcome, 16))
    detail: Mapped[str] = mapped_column(String(500), default="")
    matched: Mapped[int] = mapped_column(Integer, default=0)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)


REFUSALS_KEPT = 20


class TrackerRefusal(Base):
    """A refused delivery (bad or missing signature, stale, unreadable): its time and reason, in one of a webhook's
    REFUSALS_KEPT slots, the oldest overwritten. Bounded: whoever knows the address but not the secret cannot fill
    a table. `seq` numbers a webhook's refusals (the highest is how many there have been); slot = seq % kept.

    Written apart from the webhook's row (a valid delivery holds that row's lock while it runs) and without
    waiting for any lock: a refusal that would have to wait is not recorded (tech.record_refusal)."""

    __tablename__ = "tracker_refusals"

    hook_id: Mapped[int] = mapped_column(ForeignKey("tracker_hooks.id", ondelete="CASCADE"), primary_key=True)
    slot: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    seq: Mapped[int] = mapped_column(Integer)
    refused_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    reason: Mapped[str] = mapped_column(String(200), default="")
