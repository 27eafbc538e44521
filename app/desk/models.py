"""The desk's tables: decisions on record, and the aggregates of demand the desk reads.

Decisions on record: a PM's stage move with its reason and the desk's numbers at that moment.

Aggregates: demand per item kept in the vote's own transaction, so the desk never scans votes.

Database triggers (app/desk/aggregates.py, made by the migrations) keep these tables equal to a recount of the
vote rows after every write that changes what a vote counts for: a vote, a withdrawal, a changed importance, a
merge or its undo moving votes, a person moving organisation (or deleting their account), an organisation's
segment or revenue changing. `ahead desk-check` recounts them from the raw rows and compares.

Windows are whole UTC days: "the last 30 days" are today and the 29 days before. A row's `seg` is the voter's
organisation's segment id, 0 for an organisation without one and for people without an organisation.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import JSON, Date, Float, ForeignKey, Index, Integer, Numeric, SmallInteger, String, Text
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, utcnow
from app.roadmap.models import Item


class Decision(Base):
    """One stage move made by staff, with why (optional) and a snapshot of the item's desk numbers (every
    window: 30, 90, 365 days and all time) and of the weights in force. The stage names and the person are copied too, so the record reads the
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


class DeskDay(Base):
    """Votes per item, UTC day and segment: a count per importance, and the votes of people without an
    organisation (`lone`). The trend reads them; a day leaving a window is taken out of it with them (its sums of
    revenue factors come from `desk_org_days`)."""

    __tablename__ = "desk_days"
    __table_args__ = (Index("ix_desk_days_day", "day"),)

    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    seg: Mapped[int] = mapped_column(Integer, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)
    lone: Mapped[int] = mapped_column(Integer, default=0)


class DeskOrgDay(Base):
    """Votes per organisation, item and UTC day, per importance: the desk filtered by one organisation reads them
    (as many rows as the organisation has items and days, not votes), and a new revenue factor is summed again from
    them (a factor is an organisation's), a range of items at a time (hence the index on item_id)."""

    __tablename__ = "desk_org_days"
    __table_args__ = (Index("ix_desk_org_days_day", "day"), Index("ix_desk_org_days_item", "item_id"))

    organisation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)


class DeskWindow(Base):
    """Sums over each window (`span` days up to `desk_spans.since`; 0 = all time): votes and sums of revenue factors
    per importance, votes of people without an organisation, the distinct organisations whose latest vote on the
    item falls in it and the sum of their revenue.

    Two sets of sums of factors: `f1`…`f3` are those of the even generations of the revenue factor
    (`desk_state.generation`), `g1`…`g3` those of the odd ones. The desk reads the current generation's; the other
    set is filled with the next factor while a change is summed, a range of items at a time (aggregates.refactor_step),
    and is garbage otherwise."""

    __tablename__ = "desk_windows"

    span: Mapped[int] = mapped_column(SmallInteger, primary_key=True)
    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    seg: Mapped[int] = mapped_column(Integer, primary_key=True)
    n1: Mapped[int] = mapped_column(Integer, default=0)
    n2: Mapped[int] = mapped_column(Integer, default=0)
    n3: Mapped[int] = mapped_column(Integer, default=0)
    f1: Mapped[float] = mapped_column(Float, default=0.0)
    f2: Mapped[float] = mapped_column(Float, default=0.0)
    f3: Mapped[float] = mapped_column(Float, default=0.0)
    lone: Mapped[int] = mapped_column(Integer, default=0)
    orgs: Mapped[int] = mapped_column(Integer, default=0)
    revenue: Mapped[Decimal] = mapped_column(Numeric(18, 2), default=Decimal(0))
    g1: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    g2: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    g3: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")


class DeskItemOrg(Base):
    """One row per item and organisation with voters on it: how many, the day of the latest vote, and the segment
    and revenue it is counted with in `desk_windows`."""

    __tablename__ = "desk_item_orgs"
    __table_args__ = (Index("ix_desk_item_orgs_org", "organisation_id"),
                      Index("ix_desk_item_orgs_latest", "latest_day"))

    item_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    organisation_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    voters: Mapped[int] = mapped_column(Integer)
    latest_day: Mapped[date] = mapped_column(Date)
    seg: Mapped[int] = mapped_column(Integer)
    revenue: Mapped[Decimal] = mapped_column(Numeric(14, 2))


class DeskSpan(Base):
    """Each window's first day as `desk_windows` holds it (moved forward by `aggregates.advance`)."""

    __tablename__ = "desk_spans"

    span: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    since: Mapped[date] = mapped_column(Date)


class DeskState(Base):
    """The revenue factor the desk reads with (one row, id 1): its parameters, and its generation, whose parity says
    which set of sums of factors in `desk_windows` is its (even: `f1`…`f3`, odd: `g1`…`g3`). The triggers count new
    votes with it, and the desk reads with it (desk.desk_weights) while a new factor saved in the weights is still
    being summed by the outbox's worker.

    That new factor is the next generation (`next_revenue_*`): the other set of sums holds it for the items up to
    `next_through` (NULL: no next generation), which the triggers keep up to date as they keep the current one. When
    every item is filled the generation is moved on in one statement (aggregates.refactor_step)."""

    __tablename__ = "desk_state"

    id: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    revenue_mode: Mapped[str] = mapped_column(String(20))
    revenue_unit: Mapped[Decimal] = mapped_column(Numeric(16, 3))
    revenue_cap: Mapped[Decimal] = mapped_column(Numeric(10, 3))
    generation: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    next_revenue_mode: Mapped[str | None] = mapped_column(String(20))
    next_revenue_unit: Mapped[Decimal | None] = mapped_column(Numeric(16, 3))
    next_revenue_cap: Mapped[Decimal | None] = mapped_column(Numeric(10, 3))
    next_through: Mapped[int | None] = mapped_column(Integer)
