"""Access (admins): private mode, the OIDC providers' callbacks, and which sign-ins become staff.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import AdminUser, DbSession
from app.forms import read_form
from app.portal import service as portal
from app.web import redirect, render

router = APIRouter(include_in_schema=False)


# --- access: private mode, OIDC providers, staff role mapping (admins) --------------------------------


ACCESS_KINDS = ("emails", "domains", "groups")


def _access_form(access: portal.Access) -> dict[str, Any]:
    form: dict[str, Any] = {"private_mode": access.private_mode, "groups_claim": access.groups_claim}
    for role in ("admin", "pm"):
        rule = getattr(access, role)
        for kind in ACCESS_KINDS:
            form[f"{role}_{kind}"] = "\n".join(getattr(rule, kind))
    return form


def _access_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    settings = request.app.state.settings
    extra.setdefault("form", _access_form(portal.get_access_uncached(session)))
    providers = [{"name": p.name, "label": p.label, "issuer": p.issuer,
                  "callback": f"{settings.base_url}/auth/{p.name}/callback"} for p in settings.providers]
    return render(request, "admin/access.html", {"providers": providers, "cdn_seconds": settings.public_cache_seconds,
                                                 **extra}, status_code=status_code)


@router.get("/access", response_class=HTMLResponse)
async def access_form(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _access_page(request, session)


@router.post("/access", response_class=HTMLResponse)
async def save_access(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, portal.AccessUpdate)
    if form.data is None:
        return _access_page(request, session, status_code=422, errors=form.errors, form=form.typed)
    access = form.data.access()
    before = portal.get_access_uncached(session)
    portal.update_access(session, actor=admin, access=access)
    if access == before:
        return redirect(request, "/admin/access", flash="Nothing changed.", kind="info")
    mode = ("The portal is private: only signed-in people can see it." if access.private_mode
            else "The portal is open: visitors see the public roadmap.")
    return redirect(request, "/admin/access", flash=f"Access settings saved. {mode}")
