"""The portal's own assets: the accent colour stylesheet and the uploaded logo."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from app.deps import DbSession
from app.portal import service as portal

router = APIRouter(include_in_schema=False)


@router.get("/branding.css")
async def branding_css(session: DbSession) -> Response:
    branding = portal.get_branding(session)
    # Validated as #rrggbb when saved; CSP forbids inline styles, so the colour comes from here.
    css = f":root {{ --accent: {branding.accent_color}; }}\n"
    return Response(css, media_type="text/css", headers={"Cache-Control": "no-cache"})


@router.get("/branding/logo")
async def logo(session: DbSession) -> Response:
    asset = portal.get_logo(session)
    return Response(asset.data, media_type=asset.content_type, headers={
        "Cache-Control": "public, max-age=86400",
        "Content-Security-Policy": "default-src 'none'",
    })
