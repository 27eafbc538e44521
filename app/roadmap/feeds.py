"""Machine-readable surfaces: the changelog's Atom feed, the sitemap, robots.txt.

They are always built for a signed-out visitor, whoever asks: a feed reader or a crawler must never
be handed what a signed-in person happens to see.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from app.accounts.viewer import ANONYMOUS
from app.deps import DbSession
from app.portal import service as portal
from app.roadmap import service as roadmap
from app.web import templates

router = APIRouter(include_in_schema=False)


@router.get("/changelog.atom")
async def changelog_atom(request: Request, session: DbSession) -> Response:
    items, _ = roadmap.list_changelog(session, ANONYMOUS, per_page=50)
    base = request.app.state.settings.base_url
    updated = max((i.released_at for i in items if i.released_at), default=None)
    body = templates.get_template("roadmap/changelog.atom").render(
        items=items, base_url=base, branding=portal.get_branding(session), updated=updated,
    )
    return Response(body, media_type="application/atom+xml; charset=utf-8")


@router.get("/sitemap.xml")
async def sitemap(request: Request, session: DbSession) -> Response:
    body = templates.get_template("roadmap/sitemap.xml").render(
        items=roadmap.list_public_items(session), base_url=request.app.state.settings.base_url,
    )
    return Response(body, media_type="application/xml; charset=utf-8")


@router.get("/robots.txt")
async def robots(request: Request) -> PlainTextResponse:
    base = request.app.state.settings.base_url
    return PlainTextResponse(
        "User-agent: *\nDisallow: /admin\nDisallow: /api/\nDisallow: /login\nDisallow: /search\n"
        "Allow: /\n\n"
        f"Sitemap: {base}/sitemap.xml\n"
    )
