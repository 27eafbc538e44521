"""The staff area's overview: counts for every staff member, the latest audit events for admins.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response

from app.audit import service as audit
from app.audit.labels import audit_labels
from app.deps import CurrentViewer, DbSession
from app.roadmap import service as roadmap
from app.web import render

router = APIRouter(include_in_schema=False)


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, session: DbSession, viewer: CurrentViewer) -> Response:
    events = audit.list_events(session, per_page=8)[0] if viewer.is_admin else []
    return render(request, "admin/dashboard.html", {
        "overview": roadmap.get_overview(session), "events": events, **audit_labels(),
    })
