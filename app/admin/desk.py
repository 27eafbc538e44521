"""The prioritisation desk (staff): demand per item, the demand of one item, its RICE inputs, the weights,
and both as CSV. The figures come from app/desk/service.py; app/admin/views.py includes this router
behind the staff dependency and the CSRF check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from datetime import datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from sqlalchemy.orm import Session

from app import csvexport
from app.db import utcnow
from app.deps import AdminUser, CurrentViewer, DbSession, StaffUser
from app.desk import service as desk
from app.forms import read_form
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

# The demand page lists this many people, heaviest first; its CSV has everyone.
PEOPLE_SHOWN = 200

COLUMNS: list[tuple[desk.Sort, str]] = [
    (desk.Sort.item, "Item"), (desk.Sort.voters, "Voters"), (desk.Sort.organisations, "Orgs"),
    (desk.Sort.importance, "Importance mix"), (desk.Sort.demand, "Weighted demand"),
    (desk.Sort.revenue, "Revenue"), (desk.Sort.trend, "Trend"), (desk.Sort.rice, "RICE"),
    (desk.Sort.feedback, "Feedback"), (desk.Sort.stage, "Stage"), (desk.Sort.timeframe, "Timeframe"),
    (desk.Sort.age, "Age"),
]

DESK_CSV_HEADER = [
    "Item id", "Title", "Product", "Stage", "Timeframe", "Published", "Age (days)", "Voters", "Organisations",
    "Nice to have", "Important", "Critical", "Weighted demand", "Revenue represented", "Reach", "Impact",
    "Confidence (%)", "Effort (person-months)", "RICE", "Private feedback", "Votes per week (12 weeks, oldest first)",
]
DEMAND_CSV_HEADER = [
    "Person", "Email", "Organisation", "Segment", "Segment weight", "Revenue", "Importance", "Importance weight",
    "Revenue factor", "Weighted demand", "Voted at (UTC)", "Channel", "Captured by", "Source", "Source link",
    "Merged from", "Note",
]


def sparkline(trend: list[int], *, width: int = 60, height: int = 20) -> dict[str, Any]:
    """Polyline points for a small SVG of votes per week, scaled to the item's busiest week."""
    top = max(trend) if trend and max(trend) > 0 else 1
    step = width / max(1, len(trend) - 1)
    points = [(round(i * step, 1), round(height - 2 - (value / top) * (height - 4), 1)) for i, value in enumerate(trend)]
    return {"width": width, "height": height, "points": " ".join(f"{x},{y}" for x, y in points),
            "last": points[-1] if points else (0, height), "total": sum(trend)}


def _sort_links(request: Request, query: desk.DeskQuery) -> dict[str, str]:
    """Each column's header link: the other direction when it is the sorted column, its first direction else."""
    base = dict(request.query_params.items())
    base.pop("page", None)
    links = {}
    for sort, _label in COLUMNS:
        if sort is query.sort:
            direction = "asc" if query.direction == "desc" else "desc"
        else:
            direction = desk.first_direction(sort)
        params = {**base, "sort": sort.value, "dir": direction}
        links[sort.value] = "/admin/desk?" + urlencode({k: v for k, v in params.items() if v})
    return links


def _export_link(request: Request, path: str) -> str:
    params = {k: v for k, v in request.query_params.items() if k != "page" and v}
    return path + ("?" + urlencode(params) if params else "")


def _number(value: float | None, places: int = desk.PLACES) -> str:
    return desk.fixed(value, places, empty="—")


def _money(value: Decimal | float | None) -> str:
    """A revenue on a page: whole currency units with thousands separators (the CSVs and API: no separators)."""
    return f"{desk.whole(value):,}"


def _desk_context(session: Session, query: desk.DeskQuery, weights: desk.Weights) -> dict[str, Any]:
    return {
        "filters": query, "weights": weights, "segments": desk.list_segment_weights(session),
        "pending": desk.refactor_pending(session),
        "choices": desk.filter_choices(session), "window_labels": desk.WINDOW_LABELS,
        "revenue_modes": desk.REVENUE_MODE_LABELS, "RevenueMode": desk.RevenueMode,
        "number": _number, "money": _money, "plain": desk.plain, "sparkline": sparkline, "trend_weeks": desk.TREND_WEEKS,
    }


@router.get("/desk", response_class=HTMLResponse)
async def desk_page(request: Request, session: DbSession, viewer: CurrentViewer) -> Response:
    query = desk.DeskQuery.from_params(request.query_params)
    if desk.windows_behind(session):
        # The first desk of a new day moves the windows forward, in a short transaction of its own (the figures
        # are right either way: a window behind has what left it taken out as it is read).
        own = request.app.state.database.new_session(write=True)
        try:
            desk.advance_windows(own)
            own.commit()
        finally:
            own.close()
    weights = desk.desk_weights(session)
    page = desk.desk_page(session, query=query, weights=weights)
    return render(request, "admin/desk.html", {
        **_desk_context(session, query, weights), "result": page, "page": page.page, "pages": page.pages,
        "columns": COLUMNS, "sort_links": _sort_links(request, query),
        "export_link": _export_link(request, "/admin/desk/export.csv"),
        # An item's demand opens with the desk's window, segment and organisation.
        "item_query": urlencode({k: v for k, v in request.query_params.items()
                                 if k in ("window", "segment", "organisation") and v}),
    })


def _desk_csv_row(row: desk.DeskRow, now: datetime) -> list[Any]:
    return [
        row.public_id, row.title, row.product, row.stage, row.timeframe, "yes" if row.published else "no",
        row.age_days(now), row.voters, row.organisations, row.nice_to_have, row.important, row.critical,
        desk.fixed(row.demand), desk.whole(row.revenue), row.reach, desk.fixed(row.impact),
        row.rice_confidence if row.rice_confidence is not None else "",
        row.effort if row.effort is not None else "", desk.fixed(row.rice),
        row.feedback, " ".join(str(n) for n in row.trend),
    ]


def _csv_response(pieces: AsyncIterator[bytes], filename: str) -> StreamingResponse:
    return StreamingResponse(pieces, media_type=csvexport.MEDIA_TYPE, headers={
        "Content-Disposition": csvexport.disposition(filename), "Cache-Control": "no-store",
    })


@router.get("/desk/export.csv")
async def desk_csv(request: Request, session: DbSession) -> Response:
    """The desk as filtered and sorted, every page, read from the database while it is sent."""
    query = desk.DeskQuery.from_params(request.query_params)
    weights = desk.desk_weights(session)
    now = utcnow()
    database = request.app.state.database

    async def pieces() -> AsyncIterator[bytes]:
        # Its own read session: the request's session is committed and closed when the answer starts.
        own = database.new_session(write=False)
        try:
            chunks = ([_desk_csv_row(r, now) for r in chunk]
                      for chunk in desk.desk_rows(own, query=query, weights=weights, now=now))
            for piece in csvexport.stream(DESK_CSV_HEADER, chunks):
                yield piece
        finally:
            own.close()

    return _csv_response(pieces(), f"desk-{now:%Y-%m-%d}.csv")


# --- the demand of one item ----------------------------------------------------------------------------------


def _demand_page(request: Request, session: Session, public_id: str, *, status_code: int = 200,
                 **extra: Any) -> Response:
    query = desk.DeskQuery.from_params(request.query_params)
    weights = desk.desk_weights(session)
    item = desk.get_item(session, public_id)
    demand = desk.item_demand(session, item=item, query=query, weights=weights)
    extra.setdefault("form", {
        "rice_confidence": str(item.rice_confidence) if item.rice_confidence is not None else "",
        "effort": desk.plain(item.effort) if item.effort is not None else "",
    })
    return render(request, "admin/desk_item.html", {
        **_desk_context(session, query, weights), "demand": demand, "item": item, "errors": {},
        "export_link": _export_link(request, f"/admin/desk/items/{item.public_id}/export.csv"),
        "back_link": _export_link(request, "/admin/desk"), "people_shown": PEOPLE_SHOWN, **extra,
    }, status_code=status_code)


@router.get("/desk/items/{public_id}", response_class=HTMLResponse)
async def item_demand(request: Request, session: DbSession, public_id: str) -> Response:
    return _demand_page(request, session, public_id)


@router.post("/desk/items/{public_id}/rice", response_class=HTMLResponse)
async def save_rice(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = desk.get_item(session, public_id)
    form = await read_form(request, desk.RiceUpdate)
    if form.data is None:
        return _demand_page(request, session, public_id, status_code=422, errors=form.errors, form=form.typed)
    confidence, effort_value = form.data.rice_confidence, form.data.effort
    changed = desk.set_rice(session, item=item, confidence=confidence, effort=effort_value, actor=user)
    target = f"/admin/desk/items/{item.public_id}"
    if not changed:
        return redirect(request, target, flash="Nothing changed.", kind="info")
    return redirect(request, target, flash=f"RICE estimate of “{item.title}” saved.")


def _demand_csv_row(asker: desk.Asker) -> list[Any]:
    return [
        asker.name, asker.email, asker.organisation, asker.segment, asker.segment_weight, desk.whole(asker.revenue),
        asker.importance.label, asker.importance_weight, desk.fixed(asker.revenue_factor, desk.FACTOR_PLACES),
        desk.fixed(asker.weighted),
        asker.voted_at.strftime("%Y-%m-%d %H:%M"), asker.channel, asker.captured_by, asker.source, asker.source_url,
        asker.merged_from, asker.note,
    ]


@router.get("/desk/items/{public_id}/export.csv")
async def item_demand_csv(request: Request, session: DbSession, public_id: str) -> Response:
    query = desk.DeskQuery.from_params(request.query_params)
    weights = desk.desk_weights(session)
    item = desk.get_item(session, public_id)
    askers = desk.item_demand(session, item=item, query=query, weights=weights).askers

    def chunks() -> Iterator[list[list[Any]]]:
        for start in range(0, len(askers), 500):
            yield [_demand_csv_row(a) for a in askers[start:start + 500]]

    return _csv_response(csvexport.astream(csvexport.stream(DEMAND_CSV_HEADER, chunks())),
                         f"demand-{item.public_id}-{utcnow():%Y-%m-%d}.csv")


# --- weights ----------------------------------------------------------------------------------------------


def _weights_form(weights: desk.Weights) -> dict[str, str]:
    return {k: (desk.plain(v) if isinstance(v, Decimal) else str(v.value))
            for k, v in ((name, getattr(weights, name)) for name in
                         ("nice_to_have", "important", "critical", "revenue_mode", "revenue_unit", "revenue_cap"))}


def _weights_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    weights = desk.get_weights(session)
    extra.setdefault("form", _weights_form(weights))
    return render(request, "admin/desk_weights.html", {
        "weights": weights, "segments": desk.list_segment_weights(session), "errors": {}, "plain": desk.plain,
        "pending": desk.refactor_pending(session), "revenue_modes": desk.REVENUE_MODE_LABELS,
        "revenue_options": [(mode.value, label) for mode, label in desk.REVENUE_MODE_LABELS.items()], **extra,
    }, status_code=status_code)


@router.get("/desk/weights", response_class=HTMLResponse)
async def weights_form(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _weights_page(request, session)


@router.post("/desk/weights", response_class=HTMLResponse)
async def save_weights(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, desk.WeightsUpdate)
    if form.data is None:
        return _weights_page(request, session, status_code=422, errors=form.errors, form=form.typed)
    weights = form.data.weights()
    if not desk.update_weights(session, actor=admin, weights=weights):
        return redirect(request, "/admin/desk/weights", flash="Nothing changed.", kind="info")
    if desk.refactor_pending(session) is not None:
        return redirect(request, "/admin/desk", flash="Weights saved: the desk is re-ranked with the new revenue factor "
                        "in the background (it says so until it has finished).")
    return redirect(request, "/admin/desk", flash="Weights saved: the desk is ranked with them now.")
