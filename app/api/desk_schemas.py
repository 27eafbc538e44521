"""Shapes of the staff API (a staff token's): the prioritisation desk and one item's demand. Unlike
app/api/schemas.py these carry what only staff may read: weights, revenue, RICE, people and their notes."""

from __future__ import annotations

from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.desk import service as desk


class ImportanceMix(BaseModel):
    nice_to_have: int
    important: int
    critical: int


class DeskRowPublic(BaseModel):
    """One item on the desk, its figures as the desk page and its CSV show them: weighted demand, impact and RICE
    with 2 decimals, revenue in whole currency units."""

    id: str = Field(description="The item's public id.", examples=["k7m2xq9p"])
    title: str
    product: str = Field(description="The product's name.")
    stage: str = Field(description="The stage's name.")
    timeframe: str = Field(examples=["Next", "2027 Q1"])
    published: bool
    age_days: int = Field(description="Days since the item was created.")
    voters: int = Field(description="People whose vote was cast in the window (with the segment/organisation filter).")
    organisations: int = Field(description="Distinct organisations of those voters.")
    importance: ImportanceMix
    weighted_demand: float = Field(description="Σ importance weight × segment weight × revenue factor, to 2 decimals.")
    revenue: int = Field(description="Σ of the yearly revenue of the voters' distinct organisations, in whole "
                                     "currency units.")
    reach: int = Field(description="RICE reach: distinct organisations, a voter without one counting as their own.")
    impact: float | None = Field(description="RICE impact: mean importance weight, to 2 decimals; null without "
                                             "voters.")
    rice_confidence: int | None = Field(description="Percent, entered by a PM.")
    effort: float | None = Field(description="Person-months, entered by a PM.")
    rice: float | None = Field(description="reach × impact × confidence ÷ effort (of the unrounded impact), to 2 "
                                           "decimals; null without confidence and effort.")
    feedback: int = Field(description="Private feedback linked to the item, written in the window.")
    trend: list[int] = Field(description=f"Votes per week over the last {desk.TREND_WEEKS} weeks, oldest first.")

    @classmethod
    def of(cls, row: desk.DeskRow, now: datetime) -> DeskRowPublic:
        return cls(
            id=row.public_id, title=row.title, product=row.product, stage=row.stage, timeframe=row.timeframe,
            published=row.published, age_days=row.age_days(now), voters=row.voters, organisations=row.organisations,
            importance=ImportanceMix(nice_to_have=row.nice_to_have, important=row.important, critical=row.critical),
            weighted_demand=desk.rounded(row.demand) or 0.0, revenue=desk.whole(row.revenue), reach=row.reach,
            impact=desk.rounded(row.impact), rice_confidence=row.rice_confidence,
            effort=float(row.effort) if row.effort is not None else None, rice=desk.rounded(row.rice), feedback=row.feedback, trend=list(row.trend),
        )


class SegmentWeight(BaseModel):
    slug: str
    name: str
    weight: float


class PendingRevenuePublic(BaseModel):
    """A new revenue factor saved and still being summed: until it is, the figures use the one in `weights`."""

    started_at: datetime | None = Field(description="When the re-ranking was queued (UTC).")
    revenue_mode: desk.RevenueMode
    revenue_unit: float
    revenue_cap: float


class WeightsPublic(BaseModel):
    """The weights in force: with them (and the votes) every figure can be computed again."""

    nice_to_have: float
    important: float
    critical: float
    revenue_mode: desk.RevenueMode
    revenue_unit: float = Field(description="U in the revenue factor.")
    revenue_cap: float = Field(description="C, the largest factor in the capped mode.")
    segments: list[SegmentWeight]
    revenue_pending: PendingRevenuePublic | None = Field(
        default=None, description="A new revenue factor being summed in the background; null when none.")

    @classmethod
    def of(cls, weights: desk.Weights, segments: list[SegmentWeight],
           pending: desk.Pending | None = None) -> WeightsPublic:
        wanted = pending.wanted if pending is not None else None
        return cls(nice_to_have=float(weights.nice_to_have), important=float(weights.important),
                   critical=float(weights.critical), revenue_mode=weights.revenue_mode,
                   revenue_unit=float(weights.revenue_unit), revenue_cap=float(weights.revenue_cap), segments=segments,
                   revenue_pending=PendingRevenuePublic(
                       started_at=pending.started_at, revenue_mode=wanted.revenue_mode,
                       revenue_unit=float(wanted.revenue_unit), revenue_cap=float(wanted.revenue_cap))
                   if pending is not None and wanted is not None else None)


class DeskPagePublic(BaseModel):
    rows: list[DeskRowPublic]
    total: int = Field(description="Items matching the filters, over all pages.")
    page: int
    pages: int
    per_page: int
    window: Literal["30", "90", "365", "all"]
    sort: desk.Sort
    dir: Literal["asc", "desc"]
    weights: WeightsPublic
    computed_at: datetime


class OrganisationDemandPublic(BaseModel):
    id: int | None
    name: str
    segment: str
    revenue: int = Field(description="Yearly revenue, in whole currency units.")
    people: int
    weighted_demand: float = Field(description="To 2 decimals.")

    @classmethod
    def of(cls, o: desk.OrganisationDemand) -> OrganisationDemandPublic:
        return cls(id=o.organisation_id, name=o.name, segment=o.segment, revenue=desk.whole(o.revenue),
                   people=o.people, weighted_demand=desk.rounded(o.weighted) or 0.0)


class AskerPublic(BaseModel):
    """One person who asked for the item, and what their vote weighs."""

    name: str
    email: str = Field(description="Empty for a deleted account.")
    organisation: str
    segment: str
    segment_weight: float
    revenue: int = Field(description="Yearly revenue of their organisation, in whole currency units.")
    importance: Literal["nice_to_have", "important", "critical"]
    importance_weight: float
    revenue_factor: float = Field(description="To 4 decimals.")
    weighted_demand: float = Field(description="To 2 decimals.")
    voted_at: datetime
    channel: Literal["own", "captured"]
    captured_by: str
    source: str
    merged_from: str = Field(description="Title of the merged item the vote came with; empty when none.")
    note: str = Field(description="The latest private note the person left on this item.")

    @classmethod
    def of(cls, a: desk.Asker) -> AskerPublic:
        return cls(name=a.name, email=a.email, organisation=a.organisation, segment=a.segment,
                   segment_weight=float(a.segment_weight), revenue=desk.whole(a.revenue), importance=a.importance.key,
                   importance_weight=float(a.importance_weight),
                   revenue_factor=desk.rounded(a.revenue_factor, desk.FACTOR_PLACES) or 0.0,
                   weighted_demand=desk.rounded(a.weighted) or 0.0, voted_at=a.voted_at,
                   channel="captured" if a.channel == "captured" else "own", captured_by=a.captured_by,
                   source=a.source, merged_from=a.merged_from, note=a.note)


class DemandPublic(BaseModel):
    id: str
    title: str
    window: Literal["30", "90", "365", "all"]
    row: DeskRowPublic | None = Field(description="The item's desk figures; null for a merged item, or when the "
                                                   "segment/organisation filter leaves no vote.")
    organisations: list[OrganisationDemandPublic]
    people: list[AskerPublic] = Field(description="Heaviest first.")


class EstimateUpdate(BaseModel):
    """A PM's RICE inputs; null (or leaving one out) clears it."""

    model_config = ConfigDict(extra="forbid")

    rice_confidence: int | None = Field(default=None, ge=1, le=100, description="Percent, 1 to 100.")
    effort: float | None = Field(default=None, ge=0.01, le=9999,
                                 description="Person-months, 0.01 to 9999; rounded to two decimals.")

    def effort_decimal(self) -> Decimal | None:
        if self.effort is None:
            return None
        return Decimal(repr(self.effort)).quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


class EstimatePublic(BaseModel):
    id: str
    rice_confidence: int | None
    effort: float | None
    changed: bool = Field(description="False when the estimate was already this.")
