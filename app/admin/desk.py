"""The prioritisation desk (staff): demand per item, the demand of one item, its RICE inputs, the weights,
and both as CSV. The figures come from app/desk/service.py; app/admin/views.py includes this router
behind the staff dependency and the CSRF check.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, replace
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
from app.errors import AppError
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


# What the window a link falls back to is called in a sentence ("showing the last 90 days").
_WINDOW_PHRASES = {"30": "the last 30 days", "90": "the last 90 days", "365": "the last 365 days", "all": "all time"}


def _shown(value: str) -> str:
    """A value from the URL as a notice quotes it: short enough to read (the page escapes it)."""
    return value if len(value) <= 40 else value[:39] + "…"


@dataclass(frozen=True, slots=True)
class Misread:
    """A value of a desk URL that was not understood, and what the page shows instead."""

    problem: str  # "window=7 is not one of 30, 90, 365, all"
    instead: str  # "showing the last 90 days"

    def __str__(self) -> str:
        return f"{self.problem}: {self.instead}."


def read_query(session: Session, params: Mapping[str, str]) -> tuple[desk.DeskQuery, list[Misread]]:
    """The desk's query from a URL, and what was not understood in it.

    A shared link that was mistyped (window=7, organisation=abc, a deleted segment) must not show another view
    as if it were the one asked for: the page shows what it shows instead and says so, the CSV refuses.
    """
    query = desk.DeskQuery.from_params(params)
    notes: list[Misread] = []
    window = params.get("window") or ""
    if window and window != query.window:
        notes.append(Misread(f"window={_shown(window)} is not one of {', '.join(desk.WINDOWS)}",
                             f"showing {_WINDOW_PHRASES[query.window]}"))
    sort = params.get("sort") or ""
    if sort and sort != query.sort.value:
        notes.append(Misread(f"sort={_shown(sort)} is not a column of the desk",
                             f"sorted by {dict(COLUMNS)[query.sort].lower()}"))
    direction = params.get("dir") or ""
    if direction and direction != query.direction:
        notes.append(Misread(f"dir={_shown(direction)} is not asc or desc",
                             f"sorted {'descending' if query.direction == 'desc' else 'ascending'}"))
    organisation = (params.get("organisation") or "").strip()
    if organisation and query.organisation is None:
        notes.append(Misread(f"organisation={_shown(organisation)} is not an organisation’s number",
                             "showing all organisations"))
    page = params.get("page") or ""
    if page and not (page.isdigit() and int(page) == query.page):
        notes.append(Misread(f"page={_shown(page)} is not a page number", "showing page 1"))
    for name in ("product", "stage", "tag", "segment"):
        raw = (params.get(name) or "").strip()
        if raw and not getattr(query, name):  # longer than a slug can be
            notes.append(Misread(f"No {name} {_shown(raw)}", f"showing all {name}s"))
    missing = desk.unknown_filters(session, query=query)
    for name in missing:
        notes.append(Misread(f"No {name} {_shown(str(getattr(query, name)))}", f"showing all {name}s"))
    if missing:
        query = replace(query, product="" if "product" in missing else query.product,
                        stage="" if "stage" in missing else query.stage, tag="" if "tag" in missing else query.tag,
                        segment="" if "segment" in missing else query.segment,
                        organisation=None if "organisation" in missing else query.organisation)
    return query, notes


def _query_params(query: desk.DeskQuery) -> dict[str, str]:
    """The URL parameters of the view shown (without its page): what the page's links carry, so that a value the
    page did not understand is not passed on to the next page, the CSV or an item's demand."""
    params = {"window": query.window, "product": query.product, "stage": query.stage, "tag": query.tag,
              "segment": query.segment, "organisation": str(query.organisation or ""), "sort": query.sort.value,
              "dir": query.direction}
    return {k: v for k, v in params.items() if v}


def _sort_links(query: desk.DeskQuery) -> dict[str, str]:
    """Each column's header link: the other direction when it is the sorted column, its first direction else."""
    base = _query_params(query)
    links = {}
    for sort, _label in COLUMNS:
        if sort is query.sort:
            direction = "asc" if query.direction == "desc" else "desc"
        else:
            direction = desk.first_direction(sort)
        params = {**base, "sort": sort.value, "dir": direction}
        links[sort.value] = "/admin/desk?" + urlencode({k: v for k, v in params.items() if v})
    return links


def _link(path: str, params: Mapping[str, str]) -> str:
    return path + ("?" + urlencode(params) if params else "")


def _refuse_misread(notes: list[Misread]) -> None:
    """A CSV link with a value that was not understood exports nothing rather than another view."""
    if notes:
        raise AppError(". ".join(n.problem for n in notes) + ". Nothing was exported: correct the link, or use "
                       "Export CSV on the page, which exports what it shows.")


def _number(value: float | None, places: int = desk.PLACES) -> str:
    return desk.fixed(value, places, empty="—")


def _impact_parts(row: desk.DeskRow, weights: desk.Weights) -> tuple[str, int] | None:
    """Impact as the fraction it is: the voters' importance weights summed, and the voters (126 and 71 for an
    impact of 1.774…). The demand page writes RICE with it, so that its formula multiplies out to the RICE shown;
    with the impact rounded to 1.77 it would not (the RICE is computed on the exact impact)."""
    voters = row.nice_to_have + row.important + row.critical
    if not voters:
        return None
    total = (weights.nice_to_have * row.nice_to_have + weights.important * row.important
             + weights.critical * row.critical)
    return desk.plain(total), voters


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
    query, notes = read_query(session, request.query_params)
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
        "columns": COLUMNS, "sort_links": _sort_links(query), "notes": notes,
        "export_link": _link("/admin/desk/export.csv", _query_params(query)),
        "page_params": _query_params(query),  # the page links carry only what the desk understood
        # An item's demand opens with the desk's window, segment and organisation.
        "item_query": urlencode({k: v for k, v in _query_params(query).items()
                                 if k in ("window", "segment", "organisation")}),
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
    query, notes = read_query(session, request.query_params)
    _refuse_misread(notes)
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


def _demand_query(session: Session, request: Request) -> tuple[desk.DeskQuery, list[Misread]]:
    """An item's demand reads the desk's window, segment and organisation (the desk's other parameters are not its)."""
    return read_query(session, {k: v for k, v in request.query_params.items()
                                if k in ("window", "segment", "organisation")})


def _demand_page(request: Request, session: Session, public_id: str, *, status_code: int = 200,
                 **extra: Any) -> Response:
    query, notes = _demand_query(session, request)
    weights = desk.desk_weights(session)
    item = desk.get_item(session, public_id)
    demand = desk.item_demand(session, item=item, query=query, weights=weights)
    extra.setdefault("form", {
        "rice_confidence": str(item.rice_confidence) if item.rice_confidence is not None else "",
        "effort": desk.plain(item.effort) if item.effort is not None else "",
    })
    return render(request, "admin/desk_item.html", {
        **_desk_context(session, query, weights), "demand": demand, "item": item, "errors": {}, "notes": notes,
        "impact_parts": _impact_parts(demand.row, weights) if demand.row else None,
        "export_link": _link(f"/admin/desk/items/{item.public_id}/export.csv",
                             {k: v for k, v in _query_params(query).items() if k in ("window", "segment", "organisation")}),
        "back_link": _link("/admin/desk", _query_params(query)), "people_shown": PEOPLE_SHOWN, **extra,
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
    query, notes = _demand_query(session, request)
    _refuse_misread(notes)
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
