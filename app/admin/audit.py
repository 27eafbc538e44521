"""The audit log (admins): who changed what, newest first, filtered by kind of thing.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.audit import service as audit
from app.audit.labels import audit_labels
from app.deps import AdminUser, DbSession
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.web import render

AUDIT_PER_PAGE = 50

router = APIRouter(include_in_schema=False)


# --- audit log (admins) ---------------------------------------------------------------------------------


@router.get("/audit", response_class=HTMLResponse)
async def audit_log(request: Request, session: DbSession, admin: AdminUser,
                    type: Annotated[str, Query(max_length=40)] = "",
                    page: Annotated[int, Query(ge=1, le=100_000), ASCII_DIGITS] = 1) -> Response:
    events, total = audit.list_events(session, page=page, per_page=AUDIT_PER_PAGE, entity_type=type)
    types = audit.list_entity_types(session)
    return render(request, "admin/audit.html", {
        "events": events, "total": total, "page": page, "pages": pages_of(total, AUDIT_PER_PAGE),
        "type": type, "types": types, **audit_labels(),
    })
