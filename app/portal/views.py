"""The portal's own assets: the accent colour stylesheet and the uploaded logo."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import DbSession
from app.portal import service as portal
from app.responses import weak_etag

router = APIRouter(include_in_schema=False)


@router.get("/branding.css")
async def branding_css(session: DbSession) -> Response:
    branding = portal.get_branding(session)
    # Validated as #rrggbb when saved; CSP forbids inline styles, so the colour comes from here.
    css = f":root {{ --accent: {branding.accent_color}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "no-cache"})


@router.get("/branding/logo")
async def logo(session: DbSession, v: str | None = None) -> Response:
    asset = portal.get_logo(session)
    # Pages link the logo as ?v=<its version>, a number no other logo ever has (`update_branding`): kept a day under
    # that address. Any other address (no version, an old one, one made up before the next upload) is revalidated
    # every time, so no cache keeps today's logo under an address a later logo will have.
    current = v == str(portal.get_branding(session).logo_version)
    return Response(asset.data, media_type=asset.content_type, headers={
        "Cache-Control": "public, max-age=86400" if current else "no-cache",
        "ETag": weak_etag(asset.data),
        "Content-Security-Policy": "default-src 'none'",
    })
