"""/api/v1 for staff tokens: the prioritisation desk and one item's demand (read), an item's RICE estimate
(read-write). Same services, filters and figures as /admin/desk; see app/deps.py for how a token is read.

These endpoints take a staff API token only (`Authorization: Bearer ahead_…`): a session cookie, a customer's
or staff's, is not accepted here, so no page's cookie can be turned into a desk read from another site.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response

from app.api.desk_schemas import (
    AskerPublic,
    DemandPublic,
    DeskPagePublic,
    DeskRowPublic,
    EstimatePublic,
    EstimateUpdate,
    OrganisationDemandPublic,
    SegmentWeight,
    WeightsPublic,
)
from app.api.schemas import ErrorBody, ValidationErrorBody
from app.db import utcnow
from app.deps import DbSession, TokenReader, TokenWriter
from app.desk import service as desk
from app.parsing import ASCII_DIGITS
from app.responses import weak_etag

router = APIRouter(prefix="/api/v1", tags=["desk (staff token)"])

_SLUG = r"^[a-z0-9][a-z0-9-]*$"
Window = Literal["30", "90", "365", "all"]
_TOKEN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No staff API token, or one that is unknown, revoked or expired, or "
                                             "whose owner is no longer staff (`WWW-Authenticate: Bearer`)."},
    422: {"model": ValidationErrorBody, "description": "A parameter is invalid; `fields` says which and why."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "No item has this id."}}


def _slug(what: str) -> Any:
    return Query(max_length=60, pattern=_SLUG, description=f"Only {what} (its slug).")


def _weights(session: DbSession, weights: desk.Weights) -> WeightsPublic:
    segments = [SegmentWeight(slug=s.slug, name=s.name, weight=float(s.weight))
                for s in desk.list_segment_weights(session)]
    return WeightsPublic.of(weights, segments, desk.refactor_pending(session))


def _query(**values: Any) -> desk.DeskQuery:
    """The page's own reading of its URL, so the API filters exactly as /admin/desk does."""
    return desk.DeskQuery.from_params({k: str(v) for k, v in values.items() if v is not None})


@router.get("/desk", response_model=DeskPagePublic, responses=_TOKEN, summary="The prioritisation desk",
            response_description="One page of the desk (50 items).")
async def get_desk(
    response: Response,
    session: DbSession,
    _viewer: TokenReader,
    window: Annotated[Window, Query(description="Votes cast in the last 30, 90 or 365 days, or all.")] = "90",
    product: Annotated[str | None, _slug("this product")] = None,
    stage: Annotated[str | None, _slug("this stage")] = None,
    tag: Annotated[str | None, _slug("items with this tag")] = None,
    segment: Annotated[str | None, _slug("votes of this segment's people, and items they voted for")] = None,
    organisation: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only votes of this organisation's "
                                                                                 "people (its id)."),
                            ASCII_DIGITS] = None,
    sort: Annotated[desk.Sort, Query(description="The column to sort by.")] = desk.Sort.demand,
    dir: Annotated[Literal["asc", "desc"] | None, Query(description="Direction; each column's natural one when "
                                                                     "left out.")] = None,
    page: Annotated[int, Query(ge=1, le=100_000, description="Page number, from 1."), ASCII_DIGITS] = 1,
) -> DeskPagePublic:
    """The desk as /admin/desk shows it for the same filters: every item's voters, organisations, importance
    mix, weighted demand, revenue, RICE, private feedback and trend, with the weights in force.

    The figures are read from the aggregates each vote's transaction keeps (equal to a recount of the vote rows:
    `ahead desk-check`); the rules are those the desk page states under “How it is computed”. A page past the
    last one answers with no rows (`pages` says how many there are).
    """
    query = _query(window=window, product=product, stage=stage, tag=tag, segment=segment,
                   organisation=organisation, sort=sort.value, dir=dir, page=page)
    weights = desk.desk_weights(session)
    result = desk.desk_page(session, query=query, weights=weights)
    answer = DeskPagePublic(
        rows=[DeskRowPublic.of(r, result.now) for r in result.rows], total=result.total, page=result.page,
        pages=result.pages, per_page=desk.PER_PAGE, window=window, sort=query.sort,
        dir="asc" if query.direction == "asc" else "desc", weights=_weights(session, weights),
        computed_at=result.now,
    )
    # The tag of the figures, not of the moment they were read: a script or a dashboard asking again with
    # If-None-Match gets a 304 while they are unchanged (weak: the body it keeps differs only in computed_at).
    response.headers["etag"] = weak_etag(answer.model_dump_json(exclude={"computed_at"}))
    return answer


_ID = Path(max_length=64, description="The item's public id.")


@router.get("/items/{id}/demand", response_model=DemandPublic, responses={**_TOKEN, **_NOT_FOUND},
            summary="The demand of one item", response_description="Who asked for the item, heaviest first.")
async def get_item_demand(
    session: DbSession,
    _viewer: TokenReader,
    id: Annotated[str, _ID],
    window: Annotated[Window, Query(description="Votes cast in the last 30, 90 or 365 days, or all.")] = "90",
    segment: Annotated[str | None, _slug("votes of this segment's people")] = None,
    organisation: Annotated[int | None, Query(ge=1, le=2**31 - 1, description="Only votes of this organisation's "
                                                                                 "people (its id)."),
                            ASCII_DIGITS] = None,
) -> DemandPublic:
    """Every person whose vote counts for the item in the window, with what it weighs, and the item's demand
    per organisation: the numbers of /admin/desk/items/{id}. Any item, drafts and internal ones included."""
    query = _query(window=window, segment=segment, organisation=organisation)
    weights = desk.desk_weights(session)
    item = desk.get_item(session, id)
    demand = desk.item_demand(session, item=item, query=query, weights=weights)
    now = utcnow()
    return DemandPublic(
        id=item.public_id, title=item.title, window=window,
        row=DeskRowPublic.of(demand.row, now) if demand.row is not None else None,
        organisations=[OrganisationDemandPublic.of(o) for o in demand.organisations],
        people=[AskerPublic.of(a) for a in demand.askers],
    )


_WRITE: dict[int | str, dict[str, Any]] = {
    **_TOKEN, **_NOT_FOUND,
    403: {"model": ErrorBody, "description": "The token is read-only."},
    400: {"model": ErrorBody, "description": "The body is not valid JSON."},
}


@router.put("/items/{id}/estimate", response_model=EstimatePublic, responses=_WRITE,
            summary="Set an item's RICE estimate", response_description="The estimate as stored.")
async def put_estimate(session: DbSession, viewer: TokenWriter, id: Annotated[str, _ID],
                       body: EstimateUpdate) -> EstimatePublic:
    """Set the RICE confidence (percent) and effort (person-months) of an item, as the desk's item page does;
    audited under the token's owner. Needs a read-write token."""
    item = desk.get_item(session, id)
    assert viewer.user is not None  # a token always has its owner
    changed = desk.set_rice(session, item=item, confidence=body.rice_confidence, effort=body.effort_decimal(),
                             actor=viewer.user)
    return EstimatePublic(id=item.public_id, rice_confidence=item.rice_confidence,
                          effort=float(item.effort) if item.effort is not None else None, changed=changed)

