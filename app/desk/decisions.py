"""Decisions on record: a staff stage move with its reason and the desk's numbers and weights of that moment.

Every stage move made in the item editor (its "Move to stage" control, or the stage field of its form) is a
decision: `move_item` moves the item through `roadmap.service` and records one row in `decisions`. The why is
optional; the snapshot is always taken, for every window the desk offers (30, 90, 365 days and all time: the
desk opens on 90 days, and whichever the PM was looking at is there), so that months later the numbers the
decision rested on can be read next to today's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated, Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import utcnow
from app.desk import service as desk
from app.desk.models import Decision
from app.forms import FormModel, text
from app.paging import pages_of
from app.parsing import parse_int
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Product, Stage

WHY_LIMIT = 5000
PER_PAGE = 50


class DecisionWhy(FormModel):
    """The optional "why" that comes with a stage move (the stage form and the item form)."""

    why: Annotated[str, text(WHY_LIMIT, newlines=True,
                             too_long="At most {limit} characters ({length} now): say why in a paragraph or two.")] = ""


def _figures(row: desk.DeskRow) -> dict[str, Any]:
    return {
        "voters": row.voters, "organisations": row.organisations,
        "importance": {"nice_to_have": row.nice_to_have, "important": row.important, "critical": row.critical},
        "weighted_demand": round(row.demand, 4), "revenue": desk.plain(row.revenue), "reach": row.reach,
        "impact": round(row.impact, 4) if row.impact is not None else None,
        "rice_confidence": row.rice_confidence,
        "effort": desk.plain(row.effort) if row.effort is not None else None,
        "rice": round(row.rice, 4) if row.rice is not None else None, "feedback": row.feedback,
    }


def snapshot(session: Session, *, item: Item, now: datetime | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The item's desk numbers for the all-time window (with its trend), and under `windows` those of every window
    the desk offers (30, 90, 365 days, all), whichever the PM was looking at; and the weights in force (segments'
    included)."""
    weights = desk.desk_weights(session)
    now = now or utcnow()
    numbers: dict[str, Any] = {"window": "all"}
    windows: dict[str, Any] = {}
    for window in desk.WINDOWS:
        row = desk.item_row(session, item=item, query=desk.DeskQuery(window=window), weights=weights, now=now)
        if row is None:
            continue
        windows[window] = _figures(row)
        if window == "all":
            numbers.update({**_figures(row), "trend": list(row.trend), "trend_weeks": desk.TREND_WEEKS})
    if windows:
        numbers["windows"] = windows
    record: dict[str, Any] = dict(weights.as_record())
    pending = desk.refactor_pending(session)
    if pending is not None:
        # The numbers use the revenue factor above (the one they were counted with); the one saved was being
        # summed in the background at that moment.
        record["revenue_pending"] = {k: v for k, v in pending.wanted.as_record().items() if k.startswith("revenue_")}
    record["segments"] = [{"name": s.name, "slug": s.slug, "weight": desk.plain(s.weight)}
                          for s in desk.list_segment_weights(session)]
    return numbers, record


def record_decision(session: Session, *, item: Item, old: Stage, new: Stage, why: str, actor: User) -> Decision:
    """Record the move just made (the item is in `new` now) with its why and the snapshot; audited."""
    numbers, weights = snapshot(session, item=item)
    decision = Decision(item_id=item.id, from_stage_id=old.id, to_stage_id=new.id, from_stage_name=old.name,
                        to_stage_name=new.name, why=why, decided_by_id=actor.id,
                        decided_by_label=actor.name, decided_at=utcnow(), numbers=numbers, weights=weights)
    session.add(decision)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.item_decision_recorded, entity=item,
                 changes={"stage": [old.name, new.name], "why": [None, why or None]})
    return decision


def move_item(session: Session, *, item: Item, stage: Stage, why: str, actor: User,
              release_notes: str | None = None) -> Decision | None:
    """Move the item to `stage` and record the decision; None when it is there already (nothing recorded).
    `release_notes`: as roadmap.move_item takes them (kept when the stage is a released one)."""
    if item.stage_id == stage.id:
        return None
    old = item.stage
    roadmap.move_item(session, item=item, stage=stage, actor=actor, release_notes=release_notes)
    session.flush()
    return record_decision(session, item=item, old=old, new=stage, why=why, actor=actor)


def update_item(session: Session, *, item: Item, data: roadmap.ItemInput, why: str, actor: User) -> Decision | None:
    """The item form's save: the item's fields through roadmap.service, and a decision when its stage moved."""
    old = item.stage
    roadmap.update_item(session, item=item, data=data, actor=actor)
    if old.id == item.stage_id:
        return None
    session.flush()
    return record_decision(session, item=item, old=old, new=data.stage, why=why, actor=actor)


def list_for_item(session: Session, *, item: Item) -> list[Decision]:
    return list(session.scalars(select(Decision).where(Decision.item_id == item.id)
                                .order_by(Decision.decided_at.desc(), Decision.id.desc())))


# --- the decisions list -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionQuery:
    """The list's filters as the URL carries them (unknown or malformed values are dropped, and said so)."""

    product: str = ""
    stage: str = ""  # the stage moved to, by slug
    person: int | None = None  # decided_by_id
    since: date | None = None
    until: date | None = None  # inclusive
    page: int = 1

    @classmethod
    def from_params(cls, params: Any) -> DecisionQuery:
        def slug(name: str) -> str:
            value = (params.get(name) or "").strip()
            return value if len(value) <= 60 else ""

        return cls(product=slug("product"), stage=slug("stage"),
                   person=parse_int(params.get("person") or "", minimum=1, maximum=2**31 - 1),
                   since=_day(params.get("from") or ""), until=_day(params.get("to") or ""),
                   page=parse_int(params.get("page") or "1", minimum=1, maximum=100_000) or 1)

    @property
    def filtered(self) -> bool:
        return bool(self.product or self.stage or self.person or self.since or self.until)


def _day(value: str) -> date | None:
    value = value.strip()
    if len(value) != 10:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class DecisionRow:
    decision: Decision
    item_title: str
    item_public_id: str
    product: str


def _statement(query: DecisionQuery) -> Any:
    stmt = (select(Decision, Item.title, Item.public_id, Product.name).join(Item, Item.id == Decision.item_id)
            .join(Product, Product.id == Item.product_id))
    if query.product:
        stmt = stmt.where(Product.slug == query.product)
    if query.stage:
        stmt = stmt.where(Decision.to_stage_id.in_(select(Stage.id).where(Stage.slug == query.stage)))
    if query.person is not None:
        stmt = stmt.where(Decision.decided_by_id == query.person)
    if query.since is not None:
        stmt = stmt.where(Decision.decided_at >= datetime.combine(query.since, time(), tzinfo=UTC))
    if query.until is not None:
        end = datetime.combine(query.until + timedelta(days=1), time(), tzinfo=UTC)
        stmt = stmt.where(Decision.decided_at < end)
    return stmt.order_by(Decision.decided_at.desc(), Decision.id.desc())


def list_decisions(session: Session, *, query: DecisionQuery,
                   per_page: int = PER_PAGE) -> tuple[list[DecisionRow], int, int]:
    """(rows of the page, total, pages), newest first; no rows for a page past the last one."""
    stmt = _statement(query)
    total = session.scalar(select(func.count()).select_from(stmt.order_by(None).subquery())) or 0
    pages = pages_of(total, per_page)
    rows = (session.execute(stmt.offset((query.page - 1) * per_page).limit(per_page)).all()
            if query.page <= pages else [])
    return [DecisionRow(decision=d, item_title=t, item_public_id=p, product=n) for d, t, p, n in rows], total, pages


def decision_rows(session: Session, *, query: DecisionQuery, chunk: int = 500) -> Iterator[list[DecisionRow]]:
    """Every decision the filters keep, newest first, in chunks read as they are sent."""
    result = session.execute(_statement(query).execution_options(yield_per=chunk))
    for part in result.partitions(chunk):
        yield [DecisionRow(decision=d, item_title=t, item_public_id=p, product=n) for d, t, p, n in part]


def deciders(session: Session) -> list[tuple[int, str]]:
    """The people who recorded decisions (the person filter), by name."""
    rows = session.execute(select(User.id, User.display_name, User.email)
                           .where(User.id.in_(select(Decision.decided_by_id))).order_by(User.display_name, User.email))
    return [(r.id, r.display_name or r.email) for r in rows]
