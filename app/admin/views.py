"""The staff area: one router behind one staff dependency."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response

from app.deps import StaffUser, require_staff
from app.security import verify_csrf
from app.web import render

router = APIRouter(prefix="/admin", include_in_schema=False,
                   dependencies=[Depends(require_staff), Depends(verify_csrf)])


@router.get("", response_class=HTMLResponse)
async def dashboard(request: Request, user: StaffUser) -> Response:
    return render(request, "admin/dashboard.html", {})
