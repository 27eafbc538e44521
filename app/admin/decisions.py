"""Decisions on record (staff): every stage move with its why and the desk's numbers of that moment, filtered
by product, stage moved to, person and dates, and as CSV. The records come from app/desk/decisions.py;
app/admin/router.py includes this router behind the staff dependency and the CSRF check.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse

from app import csvexport
from app.db import utcnow
from app.deps import DbSession
from app.desk import decisions
from app.desk import service as desk
from app.web import render

router = APIRouter(include_in_schema=False)

# The snapshot's main figures are the all-time window's; the header says so, as it does for the windows after it.
ALL_TIME = [f"{what} (all time)" for what in (
    "Voters", "Organisations", "Nice to have", "Important", "Critical", "Weighted demand", "Revenue represented",
    "Reach", "Impact")]
CSV_HEADER = [
    "Decided at (UTC)", "Item id", "Item", "Product", "From stage", "To stage", "Why", "Decided by", *ALL_TIME,
    "Confidence (%)", "Effort (person-months)", "RICE (all time)", "Private feedback (all time)",
    "Votes per week (12 weeks, oldest first)", "Weights in force (JSON)",
    *[f"{what} ({label})" for label in ("last 30 days", "last 90 days", "last 365 days")
      for what in ("Voters", "Weighted demand")],
]


def _csv_row(row: decisions.DecisionRow) -> list[Any]:
    d, n = row.decision, row.decision.numbers

    def number(key: str) -> Any:
        value = n.get(key)
        return "" if value is None else value

    def figure(key: str) -> str:  # as the desk shows it: 2 decimals (older snapshots kept 4)
        value = n.get(key)
        return desk.fixed(float(value)) if value is not None else ""

    mix = n.get("importance") or {}
    # Every window the desk offers was kept (decisions recorded before that kept all time only: empty cells).
    per_window: list[Any] = []
    for window in ("30", "90", "365"):
        figures = (n.get("windows") or {}).get(window)
        per_window += ([figures["voters"], desk.fixed(float(figures["weighted_demand"]))] if figures else ["", ""])
    return [
        d.decided_at.strftime("%Y-%m-%d %H:%M"), row.item_public_id, row.item_title, row.product, d.from_stage_name,
        d.to_stage_name, d.why, d.decided_by_label, number("voters"), number("organisations"),
        mix.get("nice_to_have", ""), mix.get("important", ""), mix.get("critical", ""), figure("weighted_demand"),
        desk.whole(n["revenue"]) if n.get("revenue") is not None else "", number("reach"), figure("impact"),
        number("rice_confidence"), number("effort"), figure("rice"), number("feedback"), " ".join(str(v) for v in n.get("trend") or []),
        json.dumps(d.weights, sort_keys=True, ensure_ascii=False),
        *per_window,
    ]


@router.get("/decisions", response_class=HTMLResponse)
async def decision_list(request: Request, session: DbSession) -> Response:
    query = decisions.DecisionQuery.from_params(request.query_params)
    rows, total, pages = decisions.list_decisions(session, query=query)
    params = {k: v for k, v in request.query_params.items() if k != "page" and v}
    choices = desk.filter_choices(session)
    return render(request, "admin/decisions.html", {
        "rows": rows, "total": total, "page": query.page, "pages": pages, "filters": query,
        "products": choices.products, "stages": choices.stages, "people": decisions.deciders(session),
        "typed": {"from": request.query_params.get("from", ""), "to": request.query_params.get("to", "")},
        "export_link": "/admin/decisions/export.csv" + ("?" + urlencode(params) if params else ""),
    })


@router.get("/decisions/export.csv")
async def decision_csv(request: Request, session: DbSession) -> Response:
    """The decisions the filters keep, newest first, read from the database while they are sent."""
    query = decisions.DecisionQuery.from_params(request.query_params)
    now = utcnow()
    database = request.app.state.database

    async def pieces() -> AsyncIterator[bytes]:
        # Its own read session: the request's session is committed and closed when the answer starts.
        own = database.new_session(write=False)
        try:
            chunks = ([_csv_row(r) for r in chunk] for chunk in decisions.decision_rows(own, query=query))
            for piece in csvexport.stream(CSV_HEADER, chunks):
                yield piece
        finally:
            own.close()

    return StreamingResponse(pieces(), media_type=csvexport.MEDIA_TYPE, headers={
        "Content-Disposition": csvexport.disposition(f"decisions-{now:%Y-%m-%d}.csv"), "Cache-Control": "no-store",
    })
