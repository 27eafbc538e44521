"""Machine-readable surfaces: the sitemap and robots.txt (the changelog's feeds are app/changelog/views.py).

They are always built for a signed-out visitor, whoever asks: a feed reader or a crawler must never
be handed what a signed-in person happens to see.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse, Response

from app.accounts.viewer import ANONYMOUS
from app.deps import DbSession
from app.pagecache import cached_render_off_loop
from app.portal import service as portal
from app.roadmap import service as roadmap

router = APIRouter(include_in_schema=False)


@router.get("/sitemap.xml")
async def sitemap(request: Request, session: DbSession) -> Response:
    # Every public item: 0.3 s and 1.2 MB at 10k items. Kept (per content revision and minute, answered to a
    # crawler before the stack) and made in a thread (app.db.OffLoopMiddleware): made on the event loop per request,
    # a few crawlers held every other request of the worker.
    return await cached_render_off_loop(request, session, ANONYMOUS, "roadmap/sitemap.xml",
                                        lambda session: {"items": roadmap.list_public_items(session)},
                                        media_type="application/xml; charset=utf-8")


@router.get("/robots.txt")
async def robots(request: Request, session: DbSession) -> PlainTextResponse:
    if portal.get_access(session).private_mode:  # every page sends crawlers to sign in: nothing to crawl
        return PlainTextResponse("User-agent: *\nDisallow: /\n")
    base = request.app.state.settings.base_url
    return PlainTextResponse(
        "User-agent: *\nDisallow: /admin\nDisallow: /api/\nDisallow: /login\nDisallow: /search\n"
        "Allow: /\n\n"
        f"Sitemap: {base}/sitemap.xml\n"
    )
