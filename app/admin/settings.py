"""Portal settings (admins): branding, whether visitors and customers see vote counts, and (a link to) the
prioritisation desk's weights.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import AdminUser, DbSession
from app.desk import service as desk
from app.errors import FormInvalid
from app.forms import read_form
from app.notify import service as notify
from app.portal import service as portal
from app.web import redirect, render

router = APIRouter(include_in_schema=False)


# --- branding (admins) ----------------------------------------------------------------------------------


def _settings_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    branding = portal.get_branding(session)
    extra.setdefault("form", {"portal_name": branding.portal_name, "accent_color": branding.accent_color,
                              "product_name": branding.product_name, "product_url": branding.product_url})
    extra.setdefault("votes", portal.get_vote_display(session))
    extra.update(desk_weights=desk.get_weights(session), desk_plain=desk.plain,
                 desk_revenue_modes=desk.REVENUE_MODE_LABELS)
    digest = notify.get_digest_schedule(session)
    extra.setdefault("digest_form", {"weekday": str(digest.weekday), "hour": str(digest.hour),
                                     "timezone": digest.timezone})
    extra.update(digest=digest, weekday_options=list(enumerate(notify.WEEKDAYS)),
                 hour_options=[(h, f"{h:02d}:00") for h in range(24)],
                 zone_options=[(z, z.replace("_", " ")) for z in notify.time_zones()])
    return render(request, "admin/settings.html", {"current": branding, **extra}, status_code=status_code)


@router.get("/settings", response_class=HTMLResponse)
async def settings_form(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _settings_page(request, session)


@router.post("/settings", response_class=HTMLResponse)
async def save_settings(request: Request, session: DbSession, admin: AdminUser,
                        logo: Annotated[UploadFile | None, File()] = None) -> Response:
    form = await read_form(request, portal.BrandingUpdate)
    data: bytes | None = None
    if logo is not None and logo.filename:
        data = await logo.read(portal.LOGO_MAX_BYTES + 1)
        if not data:
            data = None
    try:
        values = form.resolve(partial(portal.resolve_branding, session))
        portal.update_branding(session, actor=admin, values=values, logo=data, remove_logo=form.valid().remove_logo)
    except FormInvalid as exc:
        typed = {**form.typed, "accent_color": portal.chosen_colour(session, form.typed)}
        return _settings_page(request, session, status_code=422, errors=exc.errors, form=typed)
    return redirect(request, "/admin/settings", flash="Branding saved. Every page shows it now.")


@router.post("/settings/digest", response_class=HTMLResponse)
async def save_digest_schedule(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, notify.DigestScheduleUpdate)
    if form.data is None:
        return _settings_page(request, session, status_code=422, digest_errors=form.errors, digest_form=form.typed)
    schedule = notify.update_digest_schedule(session, actor=admin, data=form.data)
    return redirect(request, "/admin/settings#digest", flash=f"The weekly digest goes out on {schedule.describe()}.")


@router.post("/settings/votes", response_class=HTMLResponse)
async def save_vote_display(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, portal.VoteDisplayUpdate)
    display = portal.update_vote_display(session, actor=admin, hide_counts=form.valid().hide_counts)
    flash = ("Vote counts are hidden from visitors and customers. Staff still see them." if display.hide_counts
             else "Everyone sees vote counts again.")
    return redirect(request, "/admin/settings#votes", flash=flash)
