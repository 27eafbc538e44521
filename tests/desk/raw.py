"""The desk as the vote rows give it: the statement the desk ran before it kept aggregates, summing the votes
of the window at each request. The aggregates' tests compare the desk read from the aggregates with it, window by
window and filter by filter (it shares only the filters, the order and the weights' SQL with the desk)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, and_, case, cast, func, literal, null, select
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.desk import service as desk
from app.feedback.models import Feedback
from app.organisations.models import Organisation, Segment
from app.roadmap.models import Item, Product, Stage
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

    feedback_stmt = select(Feedback.item_id.label("item_id"), func.count().label("feedback")).where(
        Feedback.item_id.is_not(None) if only_item is None else Feedback.item_id == only_item)
    if since is not None:
        feedback_stmt = feedback_stmt.where(Feedback.created_at >= since)
    if query.organisation is not None:
        feedback_stmt = feedback_stmt.where(Feedback.organisation_id == query.organisation)
    if query.segment:
        feedback_stmt = feedback_stmt.where(Feedback.organisation_id.in_(
            select(Organisation.id).where(Organisation.segment_id == (segment_id if segment_id is not None else -1))))
    feedback = feedback_stmt.group_by(Feedback.item_id).subquery("desk_feedback")

    voters = func.coalesce(votes.c.voters, 0)
    reach = func.coalesce(votes.c.organisations, 0) + func.coalesce(votes.c.lone, 0)
    impact = case((voters > 0, cast(votes.c.importance_sum, Float) / voters), else_=null())
    rice = case(
        (Item.effort.is_(None) | Item.rice_confidence.is_(None), null()),
        (voters == 0, literal(0.0, Float)),
        else_=cast(reach, Float) * impact * cast(Item.rice_confidence, Float) / literal(100.0, Float)
        / cast(Item.effort, Float),
    )
    trend_total = sum((func.coalesce(trend.c[f"w{k}"], 0) for k in range(desk.TREND_WEEKS)), literal(0))
    stmt: desk.AnySelect = (
        select(
            Item.public_id, Item.title, Product.name.label("product"), Stage.name.label("stage"), Item.timeframe,
            Item.target_year, Item.target_quarter, Item.created_at, Item.published_at, Item.rice_confidence,
            Item.effort,
            voters.label("voters"), func.coalesce(votes.c.organisations, 0).label("organisations"),
            func.coalesce(votes.c.nice, 0).label("nice"), func.coalesce(votes.c.important, 0).label("important"),
            func.coalesce(votes.c.critical, 0).label("critical"),
            func.coalesce(votes.c.demand, 0.0).label("demand"), func.coalesce(revenue.c.revenue, 0).label("revenue"),
            reach.label("reach"), impact.label("impact"), rice.label("rice"),
            func.coalesce(feedback.c.feedback, 0).label("feedback"),
            *[func.coalesce(trend.c[f"w{k}"], 0).label(f"w{k}") for k in range(desk.TREND_WEEKS)],
        )
        .join(Product, Product.id == Item.product_id)
        .join(Stage, Stage.id == Item.stage_id)
        .outerjoin(votes, votes.c.item_id == Item.id)
        .outerjoin(revenue, revenue.c.item_id == Item.id)
        .outerjoin(trend, trend.c.item_id == Item.id)
        .outerjoin(feedback, feedback.c.item_id == Item.id)
        .where(Item.merged_into_id.is_(None))
    )
    return desk._filter_and_sort(
        stmt, query, only_item=only_item, listed=votes.c.item_id.is_not(None), voters=voters,
        organisations=func.coalesce(votes.c.organisations, 0), nice=func.coalesce(votes.c.nice, 0),
        important=func.coalesce(votes.c.important, 0), critical=func.coalesce(votes.c.critical, 0),
        demand=func.coalesce(votes.c.demand, 0.0), revenue=func.coalesce(revenue.c.revenue, 0), rice=rice,
        feedback=func.coalesce(feedback.c.feedback, 0), trend_total=trend_total)
