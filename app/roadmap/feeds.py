"""Machine-readable surfaces: the sitemap and robots.txt (the changelog's feeds are app/changelog/views.py).

They are always built for a signed-out visitor, whoever asks: a feed reader or a crawler must never
be handed what a signed-in person happens to see.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from app.deps import DbSession
from app.roadmap import service as roadmap
from app.web import templates

router = APIRouter(include_in_schema=False)


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
