"""The prioritisation desk: customer demand per item, computed from the vote rows, for staff only.

Every figure is read from the aggregates the database keeps in each vote's own transaction (app/desk/
aggregates.py, equal to a recount of the vote rows: `ahead desk-check`), so a vote, a withdrawal, a merge, its
undo, a weight change or a person moving organisation is on the desk at the next request. With an organisation
filter that organisation's votes per item and day are read (`desk_org_days`), never its vote rows.

The rules, as the desk page states them ("How it is computed"):

* The votes counted are those cast in the window (`votes.created_at` on the last 30 / 90 / 365 UTC days, today
  included, or all). A person has at most one vote per item (the unique key), whatever the channel: their own vote,
  one a PM captured for them, or one that came with a merged item (a merge keeps one vote per person,
  the higher importance). A withdrawn vote is deleted, so it counts nowhere.
* A voter counts for the organisation they belong to now (`users.organisation_id`): someone who moved
  takes their votes with them, to the new organisation's segment and revenue.
* weighted demand = Σ over the item's voters in the window of
  importance weight × segment weight of their organisation (1 without one) × revenue factor.
* revenue factor, with r the yearly revenue of the voter's organisation (0 without one) and U the revenue
  unit: off 1; linear 1 + r / U; logarithmic 1 + ln(1 + r / U); capped min(1 + r / U, C).
* revenue represented = Σ of the revenue of the distinct organisations of the voters in the window.
* RICE = reach × impact × confidence / effort, with reach = distinct organisations of the voters in the
  window (a voter without an organisation counts as one of their own), impact = the mean importance weight of
  those voters, confidence (percent) and effort (person-months) entered by a PM; "—" without both.
* trend: votes per week over the last 12 weeks (whatever the window), the newest week last.
* private feedback: feedback rows linked to the item (ideas, "tell us why" notes, captured notes) written
  in the window.

With a segment or organisation filter only the votes (and feedback) of that segment's or organisation's
people count, and only items with at least one such vote are listed.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from enum import StrEnum
from time import sleep
from typing import Annotated, Any

from pydantic import ValidationInfo, field_validator
from sqlalchemy import Float, Numeric, case, cast, false, func, literal, null, select, text, true, union_all
from sqlalchemy.orm import Session, aliased
from sqlalchemy.sql import ColumnElement, Select

from app import outbox
from app.accounts.models import User
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import utcnow
from app.desk import aggregates
from app.desk.models import DeskDay, DeskItemOrg, DeskOrgDay, DeskSpan, DeskState, DeskWindow
from app.errors import NotFound
from app.feedback.models import Feedback
from app.forms import FormModel, choice, decimal_number, refuse
from app.organisations.models import Organisation, Segment
from app.outbox import service as outbox_service
from app.outbox.models import OutboxJob
from app.paging import pages_of
from app.parsing import parse_int
from app.portal.models import PortalSetting
from app.roadmap.models import Item, Product, Stage, Tag, item_tags
from app.roadmap.timeframes import Timeframe
from app.voting.models import Importance, Merge, Vote

# A select of any columns (SQLAlchemy 2.1 types a select by the tuple of its columns).
AnySelect = Select[*tuple[Any, ...]]
# The items a statement is narrowed to: one (an item's own row), a page's, or all of them (None).
Only = int | Sequence[int] | None


def _among(column: Any, only: int | Sequence[int]) -> ColumnElement[bool]:
    narrowed: ColumnElement[bool] = column == only if isinstance(only, int) else column.in_(only)
    return narrowed


PER_PAGE = 50
TREND_WEEKS = 12
WINDOWS: dict[str, int | None] = {"30": 30, "90": 90, "365": 365, "all": None}
WINDOW_LABELS = {"30": "Last 30 days", "90": "Last 90 days", "365": "Last 365 days", "all": "All time"}
DEFAULT_WINDOW = "90"
WEIGHTS_KEY = "desk_weights"


def plain(value: Decimal) -> str:
    """A decimal as people write it: 2, 1.5, 100 (not 2.000 or 1E+2)."""
    return format(value.normalize(), "f")


# How each figure reads wherever it is shown (the pages, both CSVs, the API, the decisions' history and CSV):
# weighted demand, impact and RICE with 2 decimals, a revenue factor with 4, revenue in whole currency units.
PLACES = 2
FACTOR_PLACES = 4


def half_up(value: Decimal | float, places: int = PLACES) -> Decimal:
    """The figure rounded half up on its exact value, the one rule of every place a figure is shown.

    A float sum carries binary noise (145.345 is stored as 145.34499…, 427.365 as 427.36500…1), so Python's
    round() and f"{x:.2f}" round exact half-cents one way or the other by accident. Rounding to 9 places first
    drops that noise (weights have at most 3 decimals, so the true value never needs more), then a Decimal
    rounds the half up: 145.345 → 145.35 and 427.365 → 427.37 alike.
    """
    exact = Decimal(repr(round(float(value), 9)))
    return exact.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def rounded(value: float | None, places: int = PLACES) -> float | None:
    """The figure as it is shown (None stays None), for JSON: reads exactly as `fixed` writes it."""
    return None if value is None else float(half_up(value, places))


def fixed(value: float | None, places: int = PLACES, *, empty: str = "") -> str:
    """The figure as text with its places (309.00, 1.77): a plain number a spreadsheet reads; `empty` for None."""
    return empty if value is None else format(half_up(value, places), "f")


def whole(revenue: Decimal | float | str | None) -> int:
    """A revenue in whole currency units (half up): 519700, on the page with thousands separators."""
    return int(Decimal(str(revenue or 0)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# --- weights ----------------------------------------------------------------------------------------------


class RevenueMode(StrEnum):
    off = "off"
    linear = "linear"
    logarithmic = "logarithmic"
    capped = "capped"


REVENUE_MODE_LABELS = {
    RevenueMode.off: "Off: revenue does not weigh votes",
    RevenueMode.linear: "Linear: 1 + r / U",
    RevenueMode.logarithmic: "Logarithmic: 1 + ln(1 + r / U)",
    RevenueMode.capped: "Capped: min(1 + r / U, C)",
}


@dataclass(frozen=True, slots=True)
class Weights:
    """The desk's weights in force: importance weights and how an organisation's revenue weighs its votes."""

    nice_to_have: Decimal = Decimal(1)
    important: Decimal = Decimal(2)
    critical: Decimal = Decimal(3)
    revenue_mode: RevenueMode = RevenueMode.off
    revenue_unit: Decimal = Decimal(100_000)  # U
    revenue_cap: Decimal = Decimal(3)  # C, the largest factor in the capped mode

    def importance_weight(self, importance: int) -> Decimal:
        return {1: self.nice_to_have, 2: self.important}.get(importance, self.critical)

    def revenue_factor(self, revenue: Decimal | None) -> float:
        """The factor a voter's organisation's revenue gives their vote (the SQL below computes the same)."""
        r = float(revenue or 0) / float(self.revenue_unit)
        if self.revenue_mode is RevenueMode.linear:
            return 1 + r
        if self.revenue_mode is RevenueMode.logarithmic:
            return 1 + math.log(1 + r)
        if self.revenue_mode is RevenueMode.capped:
            return min(1 + r, float(self.revenue_cap))
        return 1.0

    def as_record(self) -> dict[str, str]:
        return {k: (v.value if isinstance(v, RevenueMode) else plain(v)) for k, v in asdict(self).items()}


def get_weights(session: Session) -> Weights:
    row = session.get(PortalSetting, WEIGHTS_KEY)
    if row is None or not isinstance(row.value, dict):
        return Weights()
    try:
        return _weights_from(row.value)
    except (ValueError, InvalidOperation):
        return Weights()


def _weights_from(value: Mapping[str, Any]) -> Weights:
    default = Weights()
    numbers = {k: Decimal(str(value[k])) for k in ("nice_to_have", "important", "critical", "revenue_unit",
                                                   "revenue_cap") if k in value}
    return Weights(
        nice_to_have=numbers.get("nice_to_have", default.nice_to_have),
        important=numbers.get("important", default.important),
        critical=numbers.get("critical", default.critical),
        revenue_mode=RevenueMode(value.get("revenue_mode", default.revenue_mode.value)),
        revenue_unit=numbers.get("revenue_unit", default.revenue_unit),
        revenue_cap=numbers.get("revenue_cap", default.revenue_cap),
    )


_DEFAULTS = Weights()
WEIGHT_MESSAGE = "A number from 0 to 1000, with at most three decimals, such as 2 or 1.5."
ALL_ZERO_MESSAGE = ("Nice to have, important and critical cannot all be 0: every vote would weigh 0 and every item "
                    "would show a weighted demand of 0.00. Give at least one of them a weight above 0.")


def _weight() -> Any:
    return decimal_number(WEIGHT_MESSAGE, minimum=Decimal(0), maximum=Decimal(1000), places=3, thousands=True)


class WeightsUpdate(FormModel):
    """The weights form (admin): three importance weights and how revenue weighs votes."""

    nice_to_have: Annotated[Decimal, _weight()] = _DEFAULTS.nice_to_have
    important: Annotated[Decimal, _weight()] = _DEFAULTS.important
    critical: Annotated[Decimal, _weight()] = _DEFAULTS.critical
    revenue_mode: Annotated[RevenueMode, choice(RevenueMode, "Choose how revenue weighs votes.")] = RevenueMode.off
    revenue_unit: Annotated[Decimal, decimal_number("A revenue of at least 1, such as 100000.", minimum=Decimal(1),
                                                    maximum=Decimal(10) ** 12, places=3,
                                                    thousands=True)] = _DEFAULTS.revenue_unit
    revenue_cap: Annotated[Decimal, decimal_number("A factor from 1 to 1000, such as 3.", minimum=Decimal(1),
                                                   maximum=Decimal(1000), places=3,
                                                   thousands=True)] = _DEFAULTS.revenue_cap

    @field_validator("critical")
    @classmethod
    def _one_above_zero(cls, critical: Decimal, info: ValidationInfo) -> Decimal:
        # With every importance weight at 0 every vote weighs 0: each item's demand is 0.00 and the desk ranks
        # nothing. (Shown next to the last of the three, the one checked after the other two.)
        if critical == 0 and info.data.get("nice_to_have") == 0 and info.data.get("important") == 0:
            raise refuse(ALL_ZERO_MESSAGE)
        return critical

    def weights(self) -> Weights:
        return Weights(nice_to_have=self.nice_to_have, important=self.important, critical=self.critical,
                       revenue_mode=self.revenue_mode, revenue_unit=self.revenue_unit, revenue_cap=self.revenue_cap)


def update_weights(session: Session, *, actor: User, weights: Weights) -> bool:
    """Store the weights; audited. False when nothing changed.

    Importance and segment weights apply as the desk reads: it re-ranks with them at its next request. A new
    revenue factor needs the windows' sums of factors summed again (from `desk_org_days`, one row per organisation,
    item and day: about a row per vote). On a small portal that is done here, so the desk re-ranks at once; on a
    large one it is queued (REFACTOR_KIND, in this transaction) and the desk keeps showing every figure with the
    factor they were counted with, saying so, until the job has run (`desk_weights`, `refactor_pending`).
    """
    before = get_weights(session)
    if before == weights:
        return False
    row = session.get(PortalSetting, WEIGHTS_KEY)
    if row is None:
        session.add(PortalSetting(key=WEIGHTS_KEY, value=weights.as_record()))
    else:
        row.value = weights.as_record()
    session.flush()
    if not _aggregated(weights, _kept(session)):
        if _small(session):
            _refactor(session, weights)
        else:
            # No payload: the job sums with the weights stored when it runs, so after two quick changes the
            # last one wins whichever job runs first (the second then finds nothing to do).
            outbox_service.enqueue(session, REFACTOR_KIND, {})
    audit.record(session, actor=actor, action=AuditAction.settings_desk, entity_type="setting", label="Desk weights",
                 changes=audit.diff(before.as_record(), weights.as_record()))
    return True


# A new revenue factor is summed again in the weights' own request below this many rows of desk_org_days: about
# 0.3-0.5 s there on a busy 2-core machine (bench/README.md); above, in the outbox's worker.
REFACTOR_IN_REQUEST_ROWS = 50_000
REFACTOR_KIND = "desk_refactor"
# The job is retried soon: until it has run, the desk shows the previous revenue factor.
REFACTOR_SCHEDULE: tuple[float, ...] = (10, 30, 60, 300, 900, 3600, 3600, 3600)


def _small(session: Session) -> bool:
    """Fewer rows in desk_org_days than REFACTOR_IN_REQUEST_ROWS (counted no further than that)."""
    counted = session.execute(text(
        "SELECT count(*) FROM (SELECT 1 FROM desk_org_days LIMIT :n) t"), {"n": REFACTOR_IN_REQUEST_ROWS}).scalar()
    return int(counted or 0) < REFACTOR_IN_REQUEST_ROWS


@outbox.handler(REFACTOR_KIND, schedule=REFACTOR_SCHEDULE)
def refactor_job(session: Session, job: outbox.Job) -> None:
    """Sum the windows' revenue factors again with the factor stored now, a batch of items per transaction (each
    committed here), so votes wait for one batch at most (idempotent: nothing to do when the aggregates already hold
    it). A worker killed midway leaves the batches committed so far: the job runs again (its lease runs out) and goes
    on after them."""
    while not refactor_step(session):
        session.commit()
        pause_between_batches(session)


# Items per batch of the revenue-factor job: at 1M votes about 9,000 rows of desk_org_days (their items' rows are
# scattered over the table), 0.2-0.5 s of the desk's lock at a load of 10-12 on 2 cores (bench/README.md). Sizing
# the batches by time instead (aiming at 40 ms) made thousands of one-item batches at that load: a 400 s job.
REFACTOR_BATCH_ITEMS = 100
# SQLite's writers waiting for the write lock poll it (sleeping up to 100 ms between tries) rather than queue: a
# batch starting right after the last one's commit takes it again first, and a vote waited up to 4.8 s (bench).
REFACTOR_SQLITE_PAUSE_SECONDS = 0.15


def pause_between_batches(session: Session) -> None:
    """Let the votes waiting for the desk's lock in before the next batch (PostgreSQL queues them: no pause)."""
    if session.get_bind().dialect.name == "sqlite":
        sleep(REFACTOR_SQLITE_PAUSE_SECONDS)


def refactor_step(session: Session, *, items: int | None = None) -> bool:
    """One batch of the re-sum of the revenue factor (aggregates.refactor_step: `items` items, REFACTOR_BATCH_ITEMS
    when None), with the weights stored now; True when there is nothing more to do (the desk reads with them).

    On PostgreSQL the desk's lock is taken before the weights are read, so a change saved meanwhile is the one
    summed from the next batch on (from the first item again: the last change wins); SQLite's write transaction
    begins with the first statement and holds the one write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": aggregates.LOCK_KEY})
    weights = get_weights(session)
    if _aggregated(weights, _kept(session)):
        aggregates.drop_next(session)
        return True
    return aggregates.refactor_step(session, revenue_mode=weights.revenue_mode.value,
                                    revenue_unit=weights.revenue_unit, revenue_cap=weights.revenue_cap,
                                    items=items or REFACTOR_BATCH_ITEMS)


@dataclass(frozen=True, slots=True)
class Pending:
    """A new revenue factor stored and not yet summed: the desk shows `counted`'s, since `started_at`."""

    started_at: datetime | None  # when the job was queued (None: the weights were stored by other means)
    counted: Weights  # the weights the desk's figures use meanwhile
    wanted: Weights


def desk_weights(session: Session) -> Weights:
    """The weights the desk's figures use: those stored, with the revenue factor the aggregates were summed with
    (the stored one unless a re-sum is pending). Every desk view (page, CSV, API, demand, decisions) reads with
    these, so no view mixes two factors."""
    return _as_counted(get_weights(session), _kept(session))


def _as_counted(weights: Weights, kept: _Kept) -> Weights:
    if kept.revenue is None or _aggregated(weights, kept):
        return weights
    mode, unit, cap = kept.revenue
    return replace(weights, revenue_mode=RevenueMode(mode), revenue_unit=unit, revenue_cap=cap)


def refactor_pending(session: Session) -> Pending | None:
    """The pending re-sum of the revenue factor, None when the aggregates hold the factor stored."""
    wanted = get_weights(session)
    counted = _as_counted(wanted, _kept(session))
    if counted == wanted:
        return None
    started = session.scalar(select(OutboxJob.created_at).where(OutboxJob.kind == REFACTOR_KIND)
                             .order_by(OutboxJob.id.desc()).limit(1))
    return Pending(started_at=started, counted=counted, wanted=wanted)


def list_segment_weights(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.name)))


# --- the desk query -----------------------------------------------------------------------------------------


class Sort(StrEnum):
    item = "title"  # not `title`: str has a method of that name
    voters = "voters"
    organisations = "organisations"
    importance = "importance"
    demand = "demand"
    revenue = "revenue"
    rice = "rice"
    feedback = "feedback"
    trend = "trend"
    stage = "stage"
    timeframe = "timeframe"
    age = "age"


# The direction a column sorts in first: the most wanted, the biggest, the oldest at the top.
_FIRST_DIRECTION = {Sort.item: "asc", Sort.stage: "asc", Sort.timeframe: "asc", Sort.age: "desc"}


def first_direction(sort: Sort) -> str:
    return _FIRST_DIRECTION.get(sort, "desc")


@dataclass(frozen=True, slots=True)
class DeskQuery:
    """What the desk shows: its filters, sort and page, as the URL carries them (unknown values are dropped)."""

    product: str = ""
    stage: str = ""
    tag: str = ""
    segment: str = ""  # a segment's slug
    organisation: int | None = None
    window: str = DEFAULT_WINDOW
    sort: Sort = Sort.demand
    direction: str = "desc"
    page: int = 1

    @classmethod
    def from_params(cls, params: Mapping[str, str]) -> DeskQuery:
        def slug(name: str) -> str:
            value = (params.get(name) or "").strip()
            return value if len(value) <= 60 else ""

        window = params.get("window") or DEFAULT_WINDOW
        try:
            sort = Sort(params.get("sort") or Sort.demand.value)
        except ValueError:
            sort = Sort.demand
        direction = params.get("dir") or first_direction(sort)
        return cls(
            product=slug("product"), stage=slug("stage"), tag=slug("tag"), segment=slug("segment"),
            organisation=parse_int(params.get("organisation") or "", minimum=1, maximum=2**31 - 1),
            window=window if window in WINDOWS else DEFAULT_WINDOW, sort=sort,
            direction=direction if direction in ("asc", "desc") else first_direction(sort),
            page=parse_int(params.get("page") or "1", minimum=1, maximum=100_000) or 1,
        )

    @property
    def filtered(self) -> bool:
        return bool(self.product or self.stage or self.tag or self.segment or self.organisation)

    def since(self, now: datetime) -> datetime | None:
        """The window's first instant: midnight UTC of its first day (today is its last)."""
        days = WINDOWS[self.window]
        return _midnight(now.date() - timedelta(days=days - 1)) if days is not None else None

    @property
    def span(self) -> int:
        return WINDOWS[self.window] or 0


def unknown_filters(session: Session, *, query: DeskQuery) -> list[str]:
    """The query's filters that name nothing existing (their URL parameters: "product", "organisation", …).

    Such a filter would match no vote, so a mistyped shared link would read "No items match": the desk says
    which value it did not find and shows the view without it instead.
    """
    checks: list[tuple[str, object, Any]] = [
        ("product", query.product, Product.slug), ("stage", query.stage, Stage.slug), ("tag", query.tag, Tag.slug),
        ("segment", query.segment, Segment.slug), ("organisation", query.organisation, Organisation.id),
    ]
    return [name for name, value, column in checks
            if value and session.scalar(select(column).where(column == value).limit(1)) is None]


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=UTC)


def _week_starts(now: datetime) -> list[datetime]:
    """The trend's week boundaries, newest first: weeks[0] is the end of today, week k is [weeks[k+1], weeks[k])."""
    tomorrow = now.date() + timedelta(days=1)
    return [_midnight(tomorrow - timedelta(days=7 * k)) for k in range(TREND_WEEKS + 1)]


@dataclass(frozen=True, slots=True)
class DeskRow:
    public_id: str
    title: str
    product: str
    stage: str
    timeframe: str
    created_at: datetime
    published: bool
    voters: int
    organisations: int
    nice_to_have: int
    important: int
    critical: int
    demand: float
    revenue: Decimal
    reach: int
    impact: float | None  # None without voters
    rice_confidence: int | None
    effort: Decimal | None
    rice: float | None  # None without confidence and effort
    feedback: int
    trend: list[int] = field(default_factory=list)  # votes per week, oldest first; the last is this week

    def age_days(self, now: datetime) -> int:
        return max(0, (now - self.created_at).days)


@dataclass(frozen=True, slots=True)
class DeskPage:
    rows: list[DeskRow]
    total: int
    page: int  # the page asked for, even past the last one (then `rows` is empty)
    pages: int
    now: datetime

    @property
    def past_the_end(self) -> bool:
        return self.page > self.pages


def _vote_weight(weights: Weights) -> ColumnElement[float]:
    """One vote's weighted demand, as SQL over votes ⋈ users ⟕ organisations ⟕ segments."""
    def number(value: Decimal | float) -> ColumnElement[float]:
        return literal(float(value), Float)

    importance = case((Vote.importance == int(Importance.nice_to_have), number(weights.nice_to_have)),
                      (Vote.importance == int(Importance.important), number(weights.important)),
                      else_=number(weights.critical))
    segment = func.coalesce(cast(Segment.weight, Float), number(1))
    return importance * segment * _revenue_factor(weights, Organisation.revenue)


def _revenue_factor(weights: Weights, revenue: Any) -> ColumnElement[float]:
    """The revenue factor of an organisation's revenue, as SQL (Weights.revenue_factor computes the same)."""
    def number(value: Decimal | float) -> ColumnElement[float]:
        return literal(float(value), Float)

    ratio = func.coalesce(cast(revenue, Float), number(0)) / number(weights.revenue_unit)
    if weights.revenue_mode is RevenueMode.linear:
        return number(1) + ratio
    if weights.revenue_mode is RevenueMode.logarithmic:
        return number(1) + func.ln(number(1) + ratio)
    if weights.revenue_mode is RevenueMode.capped:
        return case((number(1) + ratio > number(weights.revenue_cap), number(weights.revenue_cap)),
                    else_=number(1) + ratio)
    return number(1)


def _importance_weight(weights: Weights) -> ColumnElement[float]:
    return case((Vote.importance == int(Importance.nice_to_have), literal(float(weights.nice_to_have), Float)),
                (Vote.importance == int(Importance.important), literal(float(weights.important), Float)),
                else_=literal(float(weights.critical), Float))


def _voter_rows(query: DeskQuery, segment_id: int | None) -> AnySelect:
    """Votes with their voter's current organisation and segment, narrowed by the segment/organisation filter."""
    stmt = (select().select_from(Vote).join(User, User.id == Vote.user_id)
            .outerjoin(Organisation, Organisation.id == User.organisation_id)
            .outerjoin(Segment, Segment.id == Organisation.segment_id))
    if query.segment:
        stmt = stmt.where(Organisation.segment_id == (segment_id if segment_id is not None else -1))
    if query.organisation is not None:
        stmt = stmt.where(User.organisation_id == query.organisation)
    return stmt


# The figures each sort orders by, in order of precedence (`_figures` names them).
_SORT_FIGURES: dict[Sort, tuple[str, ...]] = {
    Sort.voters: ("voters",), Sort.organisations: ("organisations",), Sort.importance: ("critical", "important", "nice"),
    Sort.demand: ("demand",), Sort.revenue: ("revenue",), Sort.rice: ("rice",), Sort.feedback: ("feedback",),
    Sort.trend: ("trend",),
}


def _filter_and_sort(stmt: AnySelect, query: DeskQuery, *, only_item: Only, listed: ColumnElement[bool],
                     figures: Mapping[str, Any]) -> AnySelect:
    """The desk's filters on items and its order, on either statement (aggregates or vote rows); `figures` holds at
    least the ones the sort orders by."""
    if only_item is not None:
        stmt = stmt.where(_among(Item.id, only_item))
    if query.product:
        stmt = stmt.where(Product.slug == query.product)
    if query.stage:
        stmt = stmt.where(Stage.slug == query.stage)
    if query.tag:
        stmt = stmt.where(Item.id.in_(select(item_tags.c.item_id).join(Tag, Tag.id == item_tags.c.tag_id)
                                      .where(Tag.slug == query.tag)))
    if query.segment or query.organisation is not None:
        stmt = stmt.where(listed)

    timeframe_order = case((Item.timeframe == Timeframe.now.value, 0), (Item.timeframe == Timeframe.next.value, 1),
                           (Item.timeframe == Timeframe.quarter.value, 2), else_=3)
    item_keys: dict[Sort, list[Any]] = {
        Sort.item: [func.lower(Item.title)],
        Sort.stage: [Stage.position],
        Sort.timeframe: [timeframe_order, Item.target_year, Item.target_quarter],
        # Age grows as created_at shrinks: descending age (oldest first) is ascending created_at.
        Sort.age: [Item.created_at.asc() if query.direction == "desc" else Item.created_at.desc()],
    }
    keys = item_keys.get(query.sort) or [figures[name] for name in _SORT_FIGURES[query.sort]]
    order: list[Any] = []
    for key in keys:
        if query.sort is Sort.age:
            order.append(key)
        elif query.direction == "desc":
            order.append(key.desc().nulls_last())
        else:
            order.append(key.asc().nulls_last())
    return stmt.order_by(*order, Item.id)


# --- the aggregates: checked, rebuilt, moved forward ------------------------------------------------------------


def check_aggregates(session: Session) -> list[aggregates.Difference]:
    """Recount the aggregates from the vote rows and list where they differ (empty: exact)."""
    return aggregates.recount(session)


def _refactor(session: Session, weights: Weights) -> None:
    aggregates.refactor(session, revenue_mode=weights.revenue_mode.value, revenue_unit=weights.revenue_unit,
                        revenue_cap=weights.revenue_cap)


def rebuild_aggregates(session: Session) -> None:
    """Count the aggregates again from the vote rows, with the revenue factor in force."""
    weights = get_weights(session)
    aggregates.rebuild(session, today=utcnow().date(), revenue_mode=weights.revenue_mode.value,
                       revenue_unit=weights.revenue_unit, revenue_cap=weights.revenue_cap)


def windows_behind(session: Session, *, now: datetime | None = None) -> bool:
    """True when a window's first day is not today's: the desk still answers right (it takes out what left the
    window as it reads), and `advance_windows` saves it that work."""
    today = (now or utcnow()).date()
    return any(span and since < aggregates.since_of(span, today) for span, since in _kept(session).since.items())


def advance_windows(session: Session, *, now: datetime | None = None) -> bool:
    """Move the windows' first days to today's (a short write: about a day of per-day sums per window)."""
    return aggregates.advance(session, today=(now or utcnow()).date())


@dataclass(frozen=True, slots=True)
class _Kept:
    """What the aggregates hold: each window's first day as stored, and the revenue factor they were summed with."""

    since: dict[int, date]
    revenue: tuple[str, Decimal, Decimal] | None
    segment_weights: dict[int, Decimal]
    generation: int = 0  # its parity says which set of sums of factors is the revenue factor's (DeskWindow)


def _kept(session: Session) -> _Kept:
    since = {span: aggregates.as_date(day) for span, day in session.execute(select(DeskSpan.span, DeskSpan.since))}
    state = session.execute(select(DeskState.revenue_mode, DeskState.revenue_unit, DeskState.revenue_cap,
                                   DeskState.generation).where(DeskState.id == 1)).first()
    return _Kept(since=since, revenue=(state[0], Decimal(state[1]), Decimal(state[2])) if state else None,
                 segment_weights={seg: Decimal(weight) for seg, weight in session.execute(
                     select(Segment.id, Segment.weight))}, generation=state[3] if state else 0)


def _aggregated(weights: Weights, kept: _Kept) -> bool:
    """The aggregates can answer with these weights: their revenue factor is the one in force (parameters the mode
    does not use do not count: off with another unit needs no re-sum)."""
    return kept.revenue is not None and _factor_key(*kept.revenue) == _factor_key(
        weights.revenue_mode.value, weights.revenue_unit, weights.revenue_cap)


def _factor_key(mode: str, unit: Decimal, cap: Decimal) -> tuple[str, ...]:
    if mode == RevenueMode.off.value:
        return (mode,)
    return (mode, str(unit.normalize())) if mode != RevenueMode.capped.value else (
        mode, str(unit.normalize()), str(cap.normalize()))


_SUMS = ("n1", "n2", "n3", "f1", "f2", "f3", "lone", "orgs", "revenue")


@dataclass(frozen=True, slots=True)
class _Organisation:
    """The organisation the desk is filtered by, with what weighs its votes."""

    id: int
    seg: int  # its segment's id, 0 without one
    revenue: Decimal | None
    segment_weight: Decimal


def _organisation(session: Session, organisation_id: int) -> _Organisation:
    row = session.execute(select(Organisation.segment_id, Organisation.revenue, Segment.weight)
                          .outerjoin(Segment, Segment.id == Organisation.segment_id)
                          .where(Organisation.id == organisation_id)).first()
    if row is None:  # none such: it has no votes either
        return _Organisation(organisation_id, -1, None, Decimal(1))
    return _Organisation(organisation_id, row.segment_id or 0, row.revenue,
                         Decimal(row.weight) if row.weight is not None else Decimal(1))


def _window(kept: _Kept, span: int, today: date, segment_id: int | None, weights: Weights,
            only_item: Only, name: str, organisation: _Organisation | None = None,
            sums: Collection[str] | None = None) -> Any:
    """Per item, the sums of the window of `span` days ending today (0: all time), in one segment or all, or of
    one organisation's votes: all of `_WINDOW_SUMS`, or only `sums` (what the desk's order reads).

    The stored window is used as it is when its first day is today's; when the windows have not been moved
    forward since (`aggregates.advance`), what left the window since is taken out here.
    """
    if organisation is not None:
        return _organisation_window(organisation, span, today, segment_id, weights, only_item, name, sums)
    W, D, P, OD = DeskWindow, DeskDay, DeskItemOrg, DeskOrgDay
    factors = dict(zip(aggregates.FACTOR_SETS[0], aggregates.FACTOR_SETS[kept.generation % 2], strict=True))
    parts: list[AnySelect] = [select(W.item_id, W.seg, *[getattr(W, factors.get(c, c)) for c in _SUMS])
                              .where(W.span == span)]
    stored, wanted = kept.since.get(span), aggregates.since_of(span, today)
    if span and stored is not None and stored < wanted:
        # A day's sums of factors are its counts plus what its organisations' revenue adds (as aggregates.advance).
        parts.append(select(D.item_id, D.seg, -D.n1, -D.n2, -D.n3, -D.n1, -D.n2, -D.n3, -D.lone, literal(0),
                            literal(0)).where(D.day >= stored, D.day < wanted))
        excess = _revenue_factor(weights, Organisation.revenue) - literal(1.0, Float)
        parts.append(select(OD.item_id, func.coalesce(Organisation.segment_id, 0), literal(0), literal(0), literal(0),
                            -OD.n1 * excess, -OD.n2 * excess, -OD.n3 * excess, literal(0), literal(0), literal(0))
                     .join(Organisation, Organisation.id == OD.organisation_id)
                     .where(OD.day >= stored, OD.day < wanted))
        parts.append(select(P.item_id, P.seg, *[literal(0) for _ in aggregates.COUNTS], literal(-1), -P.revenue)
                     .where(P.latest_day >= stored, P.latest_day < wanted))
    if only_item is not None:
        parts = [part.where(_among(part.selected_columns[0], only_item)) for part in parts]
    if segment_id is not None:
        parts = [part.where(part.selected_columns[1] == segment_id) for part in parts]
    u = (parts[0] if len(parts) == 1 else union_all(*parts)).subquery(f"{name}_parts")
    u_cols = {c: u.c[i + 2] for i, c in enumerate(_SUMS)}

    def number(value: Decimal) -> ColumnElement[float]:
        return literal(float(value), Float)

    # The segments' weights written in (a handful of them): cheaper than joining `segments` on every row.
    weighted = [(seg, number(weight)) for seg, weight in kept.segment_weights.items() if weight != 1]
    segment_weight: Any = case(*[(u.c[1] == seg, w) for seg, w in weighted], else_=number(Decimal(1))) if weighted \
        else number(Decimal(1))
    factor_sum = (number(weights.nice_to_have) * u_cols["f1"] + number(weights.important) * u_cols["f2"]
                  + number(weights.critical) * u_cols["f3"])
    columns = {
        "voters": u_cols["n1"] + u_cols["n2"] + u_cols["n3"], "organisations": u_cols["orgs"], "lone": u_cols["lone"],
        "nice": u_cols["n1"], "important": u_cols["n2"], "critical": u_cols["n3"],
        "demand": segment_weight * factor_sum,
        "importance_sum": number(weights.nice_to_have) * u_cols["n1"] + number(weights.important) * u_cols["n2"]
        + number(weights.critical) * u_cols["n3"],
        "revenue": u_cols["revenue"],
    }
    return (select(u.c[0].label("item_id"), *[func.sum(value).label(label) for label, value in columns.items()
                                              if sums is None or label in sums])
            .select_from(u).group_by(u.c[0]).subquery(name))


def _organisation_window(org: _Organisation, span: int, today: date, segment_id: int | None, weights: Weights,
                         only_item: Only, name: str, sums: Collection[str] | None) -> Any:
    """`_window`'s columns for one organisation's votes, from its votes per item and day: one segment weight and
    one revenue factor weigh them all, and it is one organisation (reach 1, its revenue) wherever it voted."""
    OD = DeskOrgDay
    stmt = select(OD.item_id.label("item_id")).where(OD.organisation_id == org.id)
    if span:
        stmt = stmt.where(OD.day >= aggregates.since_of(span, today))
    if only_item is not None:
        stmt = stmt.where(_among(OD.item_id, only_item))
    if segment_id is not None and segment_id != org.seg:
        stmt = stmt.where(false())
    voters = func.sum(OD.n1 + OD.n2 + OD.n3)
    voted = voters > 0
    importance_sum = func.sum(literal(float(weights.nice_to_have), Float) * OD.n1
                              + literal(float(weights.important), Float) * OD.n2
                              + literal(float(weights.critical), Float) * OD.n3)
    weight = float(org.segment_weight) * weights.revenue_factor(org.revenue)
    columns = {
        "voters": voters, "organisations": case((voted, 1), else_=0), "lone": literal(0),
        "nice": func.sum(OD.n1), "important": func.sum(OD.n2), "critical": func.sum(OD.n3),
        "demand": literal(weight, Float) * importance_sum, "importance_sum": importance_sum,
        "revenue": case((voted, literal(org.revenue or Decimal(0), Numeric(14, 2))), else_=0),
    }
    return stmt.add_columns(*[value.label(label) for label, value in columns.items() if sums is None or label in sums]
                            ).group_by(OD.item_id).subquery(name)


def _aggregate_statement(*, query: DeskQuery, weights: Weights, now: datetime, kept: _Kept, segment_id: int | None,
                         organisation: _Organisation | None, only_item: Only = None) -> AnySelect:
    """The desk's rows from the aggregates, every figure: each sort reads one window per item (or the
    organisation's days)."""
    today = now.date()
    votes = _window(kept, query.span, today, segment_id, weights, only_item, "desk_votes", organisation)
    feedback = _feedback_counts(query, query.since(now), segment_id, only_item)
    joins: list[tuple[Any, Any]] = []
    trend_total: Any = literal(0)
    if query.sort is Sort.trend:
        trend = _window(kept, TREND_WEEKS * 7, today, segment_id, weights, only_item, "desk_trend", organisation)
        joins.append((trend, trend.c.item_id == Item.id))
        trend_total = func.coalesce(trend.c.voters, 0)
    return _desk_select(query, votes=votes, revenue=func.coalesce(votes.c.revenue, 0), feedback=feedback,
                        only_item=only_item, listed=func.coalesce(votes.c.voters, 0) > 0, joins=joins,
                        trend_total=trend_total)


# The window's sums each sort reads to put every item in order (`_ranking_statement`); the sorts not listed read
# none (item columns, the feedback or the trend's window).
_SORT_SUMS: dict[Sort, frozenset[str]] = {
    Sort.voters: frozenset({"voters"}), Sort.organisations: frozenset({"organisations"}),
    Sort.importance: frozenset({"nice", "important", "critical"}), Sort.demand: frozenset({"demand"}),
    Sort.revenue: frozenset({"revenue"}), Sort.rice: frozenset({"voters", "organisations", "lone", "importance_sum"}),
}


def _ranking_statement(*, query: DeskQuery, weights: Weights, now: datetime, kept: _Kept, segment_id: int | None,
                       organisation: _Organisation | None) -> AnySelect:
    """The desk's order: the ids of the items as filtered and sorted, each sort summing only what it orders by.

    Summing every figure of the window for every item to show 50 of them cost most of PostgreSQL's time (a
    hash aggregate of ~32,000 window rows with nine sums, one of them numeric); the page's rows get their other
    figures afterwards (`_Plan.page_rows`), from their own window rows only. The same expressions as the full
    statement (`_figures`), so the order is the one the figures shown give.
    """
    today = now.date()
    listed_by_votes = bool(query.segment) or query.organisation is not None
    sums = _SORT_SUMS.get(query.sort, frozenset()) | ({"voters"} if listed_by_votes else set())
    stmt: AnySelect = (select(Item.id.label("item_pk"))
                       .join(Product, Product.id == Item.product_id).join(Stage, Stage.id == Item.stage_id)
                       .where(Item.merged_into_id.is_(None)))
    figures: dict[str, Any] = {}
    if sums:
        votes = _window(kept, query.span, today, segment_id, weights, None, "desk_votes", organisation, sums)
        stmt = stmt.outerjoin(votes, votes.c.item_id == Item.id)
        figures = _figures(votes)
    if query.sort is Sort.feedback:
        feedback = _feedback_counts(query, query.since(now), segment_id, None)
        stmt = stmt.outerjoin(feedback, feedback.c.item_id == Item.id)
        figures["feedback"] = func.coalesce(feedback.c.feedback, 0)
    if query.sort is Sort.trend:
        trend = _window(kept, TREND_WEEKS * 7, today, segment_id, weights, None, "desk_trend", organisation,
                        {"voters"})
        stmt = stmt.outerjoin(trend, trend.c.item_id == Item.id)
        figures["trend"] = func.coalesce(trend.c.voters, 0)
    listed = figures["voters"] > 0 if listed_by_votes else true()
    return _filter_and_sort(stmt, query, only_item=None, listed=listed, figures=figures)


def _figures(votes: Any) -> dict[str, Any]:
    """The desk's figures per item over a `_window` subquery, as SQL: those its columns give (a window narrowed to
    some sums gives only what they make)."""
    c = votes.c
    figures: dict[str, Any] = {name: func.coalesce(c[name], 0) for name in (
        "voters", "organisations", "nice", "important", "critical", "revenue") if name in c}
    if "demand" in c:
        figures["demand"] = func.coalesce(c.demand, 0.0)
    if {"voters", "organisations", "lone", "importance_sum"} <= set(c.keys()):
        voters = figures["voters"]
        reach = figures["organisations"] + func.coalesce(c.lone, 0)
        impact = case((voters > 0, cast(c.importance_sum, Float) / voters), else_=null())
        figures |= {"reach": reach, "impact": impact, "rice": case(
            (Item.effort.is_(None) | Item.rice_confidence.is_(None), null()),
            (voters == 0, literal(0.0, Float)),
            else_=cast(reach, Float) * impact * cast(Item.rice_confidence, Float) / literal(100.0, Float)
            / cast(Item.effort, Float),
        )}
    return figures


def _desk_select(query: DeskQuery, *, votes: Any, revenue: Any, feedback: Any, only_item: Only,
                 listed: ColumnElement[bool], trend_total: Any, joins: Sequence[tuple[Any, Any]] = (),
                 extra: Sequence[Any] = ()) -> AnySelect:
    """The desk's rows over figures per item, filtered and sorted: `votes` has voters, organisations, lone, nice,
    important, critical, demand and importance_sum per item_id; `revenue` is the revenue represented; `feedback`
    the feedback per item_id; `joins` outer-join more per-item figures that `extra` columns or `trend_total` read."""
    figures = _figures(votes) | {"revenue": revenue, "feedback": func.coalesce(feedback.c.feedback, 0),
                                 "trend": trend_total}
    shown = ("voters", "organisations", "nice", "important", "critical", "demand", "revenue", "reach", "impact",
             "rice", "feedback")
    stmt: AnySelect = (
        select(
            Item.id.label("item_pk"), Item.public_id, Item.title, Product.name.label("product"),
            Stage.name.label("stage"), Item.timeframe, Item.target_year, Item.target_quarter, Item.created_at,
            Item.published_at, Item.rice_confidence, Item.effort,
            *[figures[name].label(name) for name in shown], *extra,
        )
        .join(Product, Product.id == Item.product_id)
        .join(Stage, Stage.id == Item.stage_id)
        .outerjoin(votes, votes.c.item_id == Item.id)
    )
    for table, on in joins:
        stmt = stmt.outerjoin(table, on)
    stmt = stmt.outerjoin(feedback, feedback.c.item_id == Item.id).where(Item.merged_into_id.is_(None))
    return _filter_and_sort(stmt, query, only_item=only_item, listed=listed, figures=figures)


def _feedback_counts(query: DeskQuery, since: datetime | None, segment_id: int | None, only_item: Only) -> Any:
    stmt = select(Feedback.item_id.label("item_id"), func.count().label("feedback")).where(
        Feedback.item_id.is_not(None) if only_item is None else _among(Feedback.item_id, only_item))
    if since is not None:
        stmt = stmt.where(Feedback.created_at >= since)
    if query.organisation is not None:
        stmt = stmt.where(Feedback.organisation_id == query.organisation)
    if query.segment:
        stmt = stmt.where(Feedback.organisation_id.in_(
            select(Organisation.id).where(Organisation.segment_id == (segment_id if segment_id is not None else -1))))
    return stmt.group_by(Feedback.item_id).subquery("desk_feedback")


def _trends(session: Session, item_ids: list[int], *, segment_id: int | None, organisation: _Organisation | None,
            today: date) -> dict[int, list[int]]:
    """Votes per week of these items over the last 12 weeks (oldest first), from the per-day sums (the
    organisation's, with an organisation filter)."""
    trends: dict[int, list[int]] = {}
    if not item_ids:
        return trends
    first = today - timedelta(days=TREND_WEEKS * 7 - 1)
    days: type[DeskDay] | type[DeskOrgDay] = DeskDay if organisation is None else DeskOrgDay
    stmt = (select(days.item_id, days.day, func.sum(days.n1 + days.n2 + days.n3))
            .where(days.item_id.in_(item_ids), days.day >= first).group_by(days.item_id, days.day))
    if organisation is not None:
        stmt = stmt.where(DeskOrgDay.organisation_id == organisation.id)
        if segment_id is not None and segment_id != organisation.seg:
            stmt = stmt.where(false())
    elif segment_id is not None:
        stmt = stmt.where(DeskDay.seg == segment_id)
    for item_id, day, count in session.execute(stmt):
        week = (today - aggregates.as_date(day)).days // 7
        if 0 <= week < TREND_WEEKS and count:
            trends.setdefault(item_id, [0] * TREND_WEEKS)[TREND_WEEKS - 1 - week] += int(count)
    return trends


def _timeframe_label(row: Any) -> str:
    timeframe = Timeframe(row.timeframe)
    if timeframe is Timeframe.quarter and row.target_year and row.target_quarter:
        return f"{row.target_year} Q{row.target_quarter}"
    if timeframe is Timeframe.quarter:
        return "Later"
    return timeframe.value.capitalize()


def _row(row: Any, trend: list[int] | None = None) -> DeskRow:
    return DeskRow(
        public_id=row.public_id, title=row.title, product=row.product, stage=row.stage,
        timeframe=_timeframe_label(row), created_at=row.created_at, published=row.published_at is not None,
        voters=int(row.voters), organisations=int(row.organisations), nice_to_have=int(row.nice),
        important=int(row.important), critical=int(row.critical), demand=float(row.demand or 0),
        revenue=Decimal(row.revenue or 0), reach=int(row.reach),
        impact=float(row.impact) if row.impact is not None else None,
        rice_confidence=row.rice_confidence, effort=row.effort,
        rice=float(row.rice) if row.rice is not None else None, feedback=int(row.feedback),
        trend=trend if trend is not None else [int(getattr(row, f"w{k}")) for k in reversed(range(TREND_WEEKS))],
    )


@dataclass(frozen=True, slots=True)
class _Plan:
    """What the desk's statements are made of, once read: the query, the weights the aggregates hold, the filter's
    segment and organisation."""

    query: DeskQuery
    weights: Weights
    kept: _Kept
    segment_id: int | None
    organisation: _Organisation | None
    now: datetime

    @property
    def today(self) -> date:
        return self.now.date()

    def statement(self, only_item: Only = None) -> AnySelect:
        """Every figure of the items as filtered and sorted (all of them, or `only_item`)."""
        return _aggregate_statement(query=self.query, weights=self.weights, now=self.now, kept=self.kept,
                                    segment_id=self.segment_id, organisation=self.organisation, only_item=only_item)

    @property
    def stmt(self) -> AnySelect:
        return self.statement()

    def ranking(self) -> AnySelect:
        """The ids of the items as filtered and sorted, from what the sort reads only."""
        return _ranking_statement(query=self.query, weights=self.weights, now=self.now, kept=self.kept,
                                  segment_id=self.segment_id, organisation=self.organisation)

    def page_rows(self, session: Session, item_ids: Sequence[int]) -> list[DeskRow]:
        """These items' rows with every figure, in the order given (the ranking's)."""
        if not item_ids:
            return []
        by_id = {r.item_pk: r for r in session.execute(self.statement(item_ids).order_by(None))}
        return self.rows(session, [by_id[item_id] for item_id in item_ids])

    def rows(self, session: Session, rows: Any) -> list[DeskRow]:
        """The rows with their trends (read for these rows only)."""
        trends = _trends(session, [r.item_pk for r in rows], segment_id=self.segment_id,
                         organisation=self.organisation, today=self.today)
        return [_row(r, trends.get(r.item_pk, [0] * TREND_WEEKS)) for r in rows]


def _plan(session: Session, *, query: DeskQuery, weights: Weights, now: datetime) -> _Plan:
    """The desk's statements, from the aggregates."""
    kept = _kept(session)
    # The revenue factor the windows hold, whatever the caller passed: a re-sum that finished since the caller
    # read its weights (or one still pending) never mixes two factors in one answer.
    weights = _as_counted(weights, kept)
    segment_id = ((session.scalar(select(Segment.id).where(Segment.slug == query.segment)) or -1)
                  if query.segment else None)
    organisation = _organisation(session, query.organisation) if query.organisation is not None else None
    return _Plan(query, weights, kept, segment_id, organisation, now)


def desk_page(session: Session, *, query: DeskQuery, weights: Weights, now: datetime | None = None,
              per_page: int = PER_PAGE) -> DeskPage:
    """One page of the desk: the items as filtered and sorted, with their figures.

    Two statements: the order of every item (with only what the sort reads) cut to the page, then every figure of
    the page's items only."""
    now = now or utcnow()
    plan = _plan(session, query=query, weights=weights, now=now)
    ranking = plan.ranking()
    # The total comes with the page (a window count): the ranking runs once, not once more to count.
    counted = ranking.add_columns(func.count().over().label("total_rows"))
    ranked = session.execute(counted.offset((query.page - 1) * per_page).limit(per_page)).all()
    if ranked:
        total = int(ranked[0].total_rows)
    else:  # past the last page (or nothing at all): the page asked for is empty, and the count says how many
        total = session.scalar(select(func.count()).select_from(ranking.order_by(None).subquery())) or 0
    pages = pages_of(total, per_page)
    return DeskPage(rows=plan.page_rows(session, [r.item_pk for r in ranked]), total=total, page=query.page,
                    pages=pages, now=now)


def desk_rows(session: Session, *, query: DeskQuery, weights: Weights, now: datetime,
              chunk: int = 500) -> Iterator[list[DeskRow]]:
    """Every row of the desk as filtered and sorted, in chunks, read from the database as they are sent."""
    plan = _plan(session, query=query, weights=weights, now=now)
    result = session.execute(plan.statement().execution_options(yield_per=chunk))
    for part in result.partitions(chunk):
        yield plan.rows(session, part)


def demand_by_item(session: Session, *, item_ids: list[int], weights: Weights) -> dict[int, tuple[int, float]]:
    """All-time (voters, weighted demand) of these items, as the desk counts them (for the items list)."""
    if not item_ids:
        return {}
    kept = _kept(session)
    weights = _as_counted(weights, kept)
    if _aggregated(weights, kept):
        totals = _window(kept, 0, utcnow().date(), None, weights, None, "desk_totals")
        return {item_id: (int(voters or 0), float(demand or 0)) for item_id, voters, demand in session.execute(
            select(totals.c.item_id, totals.c.voters, totals.c.demand).where(totals.c.item_id.in_(item_ids)))
            if voters}
    rows = session.execute(
        _voter_rows(DeskQuery(window="all"), None)
        .add_columns(Vote.item_id, func.count(), func.sum(_vote_weight(weights)))
        .where(Vote.item_id.in_(item_ids)).group_by(Vote.item_id)
    )
    return {item_id: (int(voters), float(demand or 0)) for item_id, voters, demand in rows}


def demand_ranking(weights: Weights) -> Any:
    """All-time weighted demand per item, as a subquery (item_id, demand) the items list sorts by: the same
    sum as `demand_by_item`, so the order and the column agree."""
    return (_voter_rows(DeskQuery(window="all"), None)
            .add_columns(Vote.item_id.label("item_id"), func.sum(_vote_weight(weights)).label("demand"))
            .group_by(Vote.item_id).subquery("demand_rank"))


@dataclass(frozen=True, slots=True)
class FilterChoices:
    products: list[tuple[str, str]]
    stages: list[tuple[str, str]]
    tags: list[tuple[str, str]]
    segments: list[tuple[str, str]]
    organisations: list[tuple[int, str]]


def filter_choices(session: Session) -> FilterChoices:
    return FilterChoices(
        products=[(r.slug, r.name) for r in session.execute(select(Product.slug, Product.name)
                                                             .order_by(Product.position, Product.name))],
        stages=[(r.slug, r.name) for r in session.execute(select(Stage.slug, Stage.name).order_by(Stage.position))],
        tags=[(r.slug, r.name) for r in session.execute(select(Tag.slug, Tag.name).order_by(Tag.name))],
        segments=[(r.slug, r.name) for r in session.execute(select(Segment.slug, Segment.name).order_by(Segment.name))],
        organisations=[(r.id, r.name) for r in session.execute(select(Organisation.id, Organisation.name)
                                                                .order_by(Organisation.name, Organisation.id))],
    )


# --- the demand of one item -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Asker:
    """One person who asked for the item: their vote, how it came, and what it weighs."""

    name: str
    email: str
    organisation: str
    organisation_id: int | None
    segment: str
    segment_weight: Decimal
    revenue: Decimal
    importance: Importance
    importance_weight: Decimal
    revenue_factor: float
    weighted: float
    voted_at: datetime
    channel: str  # "own" | "captured"
    captured_by: str
    source: str
    source_url: str
    merged_from: str  # the title of the merged item the vote came with, "" when none
    merged_from_id: str
    note: str  # the latest private note they left on this item


@dataclass(frozen=True, slots=True)
class OrganisationDemand:
    organisation_id: int | None
    name: str
    segment: str
    revenue: Decimal
    people: int
    weighted: float


@dataclass(frozen=True, slots=True)
class Demand:
    item: Item
    row: DeskRow | None
    askers: list[Asker]
    organisations: list[OrganisationDemand]


def get_item(session: Session, public_id: str) -> Item:
    """Any item, drafts, internal and merged ones included (staff only)."""
    item = session.scalar(select(Item).where(Item.public_id == public_id)) if len(public_id) <= 16 else None
    if item is None:
        raise NotFound("No item has this address.")
    return item


def _merged_from(session: Session, item: Item, vote_ids: set[int]) -> dict[int, tuple[str, str]]:
    """For votes that came with a merge into this item (not undone): the merged item's (title, public id)."""
    found: dict[int, tuple[str, str]] = {}
    merges = session.execute(
        select(Merge.record, Item.title, Item.public_id).join(Item, Item.id == Merge.source_item_id)
        .where(Merge.target_item_id == item.id, Merge.undone_at.is_(None)).order_by(Merge.merged_at)
    )
    for record, title, public_id in merges:
        for vote_id in (record or {}).get("moved_votes", []):
            if vote_id in vote_ids:
                found[vote_id] = (title, public_id)
    return found


def item_demand(session: Session, *, item: Item, query: DeskQuery, weights: Weights,
                now: datetime | None = None) -> Demand:
    """Who asked for the item in the window (with the desk's segment/organisation filter), heaviest first."""
    now = now or utcnow()
    since = query.since(now)
    segment_id = (session.scalar(select(Segment.id).where(Segment.slug == query.segment))
                  if query.segment else None)
    captor = aliased(User)
    stmt = (_voter_rows(query, segment_id)
            .add_columns(Vote.id, Vote.importance, Vote.created_at, Vote.source, Vote.source_url, Vote.captured_by_id,
                         User.id.label("user_id"), User.display_name, User.email, User.deleted_at,
                         Organisation.id.label("org_id"), Organisation.name.label("org_name"),
                         Organisation.revenue, Segment.name.label("segment_name"), Segment.weight.label("segment_weight"),
                         captor.display_name.label("captor_name"), captor.email.label("captor_email"))
            .outerjoin(captor, captor.id == Vote.captured_by_id)
            .where(Vote.item_id == item.id)
            .order_by(Vote.created_at, Vote.id))
    if since is not None:
        stmt = stmt.where(Vote.created_at >= since)
    rows = session.execute(stmt).all()
    merged = _merged_from(session, item, {r.id for r in rows})
    notes: dict[int, str] = {}
    if rows:
        for author_id, body in session.execute(
            select(Feedback.author_id, Feedback.body).where(
                Feedback.item_id == item.id, Feedback.author_id.in_({r.user_id for r in rows}))
            .order_by(Feedback.created_at, Feedback.id)
        ):
            if author_id is not None and body.strip():
                notes[author_id] = body  # the latest wins
    askers: list[Asker] = []
    for r in rows:
        importance = Importance(r.importance)
        segment_weight = Decimal(r.segment_weight) if r.segment_weight is not None else Decimal(1)
        revenue = Decimal(r.revenue) if r.revenue is not None else Decimal(0)
        factor = weights.revenue_factor(revenue)
        iw = weights.importance_weight(importance)
        name = "(deleted account)" if r.deleted_at is not None else (r.display_name or r.email.split("@", 1)[0])
        title, source_id = merged.get(r.id, ("", ""))
        askers.append(Asker(
            name=name, email="" if r.deleted_at is not None else r.email, organisation=r.org_name or "",
            organisation_id=r.org_id, segment=r.segment_name or "", segment_weight=segment_weight, revenue=revenue,
            importance=importance, importance_weight=iw, revenue_factor=factor,
            weighted=float(iw) * float(segment_weight) * factor, voted_at=r.created_at,
            channel="captured" if r.captured_by_id is not None else "own",
            captured_by=(r.captor_name or (r.captor_email or "").split("@", 1)[0]) if r.captured_by_id else "",
            source=r.source.value if r.source is not None else "", source_url=r.source_url or "",
            merged_from=title, merged_from_id=source_id, note=notes.get(r.user_id, ""),
        ))
    askers.sort(key=lambda a: (-a.weighted, a.voted_at))
    by_org: dict[int | None, list[Asker]] = {}
    for asker in askers:
        if asker.organisation_id is not None:
            by_org.setdefault(asker.organisation_id, []).append(asker)
    organisations = sorted(
        (OrganisationDemand(organisation_id=org_id, name=group[0].organisation, segment=group[0].segment,
                            revenue=group[0].revenue, people=len(group), weighted=sum(a.weighted for a in group))
         for org_id, group in by_org.items()),
        key=lambda o: (-o.weighted, o.name),
    )
    return Demand(item=item, row=item_row(session, item=item, query=query, weights=weights, now=now), askers=askers,
                  organisations=organisations)


def item_row(session: Session, *, item: Item, query: DeskQuery, weights: Weights,
             now: datetime | None = None) -> DeskRow | None:
    """The item's own desk row for the query's window and filters; None for a merged item, or when the filters
    leave it no vote."""
    if item.merged_into_id is not None:
        return None
    plan = _plan(session, query=query, weights=weights, now=now or utcnow())
    rows = plan.rows(session, session.execute(plan.statement(item.id)).all())
    return rows[0] if rows else None


# --- RICE inputs --------------------------------------------------------------------------------------------


class RiceUpdate(FormModel):
    """A PM's RICE inputs for an item: confidence in whole percent ("80" or "80%"), effort in person-months;
    either may be left empty (no estimate)."""

    rice_confidence: Annotated[int | None, decimal_number(
        "A whole percentage from 1 to 100, such as 80 (or leave it empty).", minimum=Decimal(1), maximum=Decimal(100),
        places=0, required=False, suffix="%")] = None
    effort: Annotated[Decimal | None, decimal_number(
        "Person-months from 0.01 to 9999, such as 2 or 0.5 (or leave it empty).", minimum=Decimal("0.01"),
        maximum=Decimal(9999), places=2, required=False)] = None


def set_rice(session: Session, *, item: Item, confidence: int | None, effort: Decimal | None, actor: User) -> bool:
    """Store the PM's RICE confidence and effort for the item, audited; False when nothing changed."""
    before = {"rice_confidence": item.rice_confidence,
              "effort": plain(item.effort) if item.effort is not None else None}
    after = {"rice_confidence": confidence, "effort": plain(effort) if effort is not None else None}
    changes = audit.diff(before, after)
    if not changes:
        return False
    item.rice_confidence, item.effort = confidence, effort
    item.updated_at = utcnow()
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.item_estimated, entity=item, changes=changes)
    return True
