"""The desk as the vote rows give it: the statement the desk ran before it kept aggregates, summing the votes
of the window at each request. The aggregates' tests compare the desk read from the aggregates with it, window by
window and filter by filter (it shares only the filters, the order and the weights' SQL with the desk)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import and_, case, func, literal, select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.desk import service as desk
from app.organisations.models import Organisation, Segment
from app.roadmap.models import Item
from app.voting.models import Importance, Vote


def raw_desk(session: Session, query: desk.DeskQuery, weights: desk.Weights, now: datetime) -> list[desk.DeskRow]:
    """The desk's rows as the vote rows give them."""
    return [desk._row(r) for r in session.execute(desk_statement(session, query=query, weights=weights, now=now))]


def desk_statement(session: Session, *, query: desk.DeskQuery, weights: desk.Weights, now: datetime,
                    only_item: int | None = None) -> desk.AnySelect:
    """The desk's rows, filtered and sorted; `only_item` narrows every aggregate to that item's votes."""
    since = query.since(now)
    segment_id = (session.scalar(select(Segment.id).where(Segment.slug == query.segment))
                  if query.segment else None)

    def windowed(stmt: desk.AnySelect) -> desk.AnySelect:
        return stmt.where(Vote.created_at >= since) if since is not None else stmt

    base = desk._voter_rows(query, segment_id)
    if only_item is not None:
        base = base.where(Vote.item_id == only_item)
    no_org = case((User.organisation_id.is_(None), 1), else_=0)
    votes = windowed(base.add_columns(
        Vote.item_id.label("item_id"),
        func.count().label("voters"),
        func.count(func.distinct(User.organisation_id)).label("organisations"),
        func.sum(no_org).label("lone"),
        func.sum(case((Vote.importance == int(Importance.nice_to_have), 1), else_=0)).label("nice"),
        func.sum(case((Vote.importance == int(Importance.important), 1), else_=0)).label("important"),
        func.sum(case((Vote.importance == int(Importance.critical), 1), else_=0)).label("critical"),
        func.sum(desk._vote_weight(weights)).label("demand"),
        func.sum(desk._importance_weight(weights)).label("importance_sum"),
    )).group_by(Vote.item_id).subquery("desk_votes")

    distinct_orgs = windowed(base.add_columns(Vote.item_id.label("item_id"), Organisation.id.label("org_id"),
                                              Organisation.revenue.label("revenue"))
                             .where(Organisation.id.is_not(None))).distinct().subquery("desk_org_votes")
    revenue = (select(distinct_orgs.c.item_id, func.sum(distinct_orgs.c.revenue).label("revenue"))
               .group_by(distinct_orgs.c.item_id).subquery("desk_revenue"))

    weeks = desk._week_starts(now)
    trend = (base.add_columns(Vote.item_id.label("item_id"), *[
        func.sum(case((and_(Vote.created_at >= weeks[k + 1], Vote.created_at < weeks[k]), 1), else_=0))
        .label(f"w{k}") for k in range(desk.TREND_WEEKS)])
        .where(Vote.created_at >= weeks[-1]).group_by(Vote.item_id).subquery("desk_trend"))

    feedback = desk._feedback_counts(query, since, segment_id, only_item)  # feedback is counted from its rows

    trend_total = sum((func.coalesce(trend.c[f"w{k}"], 0) for k in range(desk.TREND_WEEKS)), literal(0))
    return desk._desk_select(
        query, votes=votes, revenue=func.coalesce(revenue.c.revenue, 0), feedback=feedback, only_item=only_item,
        listed=votes.c.item_id.is_not(None), trend_total=trend_total,
        joins=[(revenue, revenue.c.item_id == Item.id), (trend, trend.c.item_id == Item.id)],
        extra=[func.coalesce(trend.c[f"w{k}"], 0).label(f"w{k}") for k in range(desk.TREND_WEEKS)])
