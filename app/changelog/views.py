"""The changelog's public pages: the list (overall or one product's), an entry's page, and the Atom feeds.

The feeds are built for a signed-out visitor, whoever asks: a feed reader must never be handed what a
signed-in person happens to see. `/changelog.atom` is the overall feed, `/changelog.atom?product=<slug>`
one product's.
"""

from __future__ import annotations

from math import ceil
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts.viewer import ANONYMOUS
from app.changelog import service as changelog
from app.deps import CurrentViewer, DbSession
from app.parsing import ASCII_DIGITS
from app.portal import service as portal
from app.roadmap import service as roadmap
from app.web import render, templates

router = APIRouter(include_in_schema=False)

Slug = Annotated[str | None, Query(max_length=60, pattern=r"^[a-z0-9-]*$")]


@router.get("/changelog", response_class=HTMLResponse)
async def changelog_page(request: Request, session: DbSession, viewer: CurrentViewer, product: Slug = None,
                         page: Annotated[int, Query(ge=1, le=10_000), ASCII_DIGITS] = 1) -> Response:
    chosen = changelog.get_product(session, product)
    releases, total = changelog.list_releases(session, viewer, page=page, product=chosen)
    return render(request, "changelog/list.html", {
        "releases": releases, "total": total, "page": page, "pages": max(1, ceil(total / changelog.PAGE_SIZE)),
        "products": roadmap.list_products(session), "product": chosen,
    })


@router.get("/changelog.atom")
async def changelog_atom(request: Request, session: DbSession, product: Slug = None) -> Response:
    chosen = changelog.get_product(session, product)
    releases, _ = changelog.list_releases(session, ANONYMOUS, per_page=changelog.FEED_SIZE, product=chosen)
    body = templates.get_template("changelog/feed.atom").render(
        releases=releases, base_url=request.app.state.settings.base_url, branding=portal.get_branding(session),
        updated=changelog.latest_update(releases), product=chosen,
    )
    return Response(body, media_type="application/atom+xml; charset=utf-8")


@router.get("/changelog/{public_id}", response_class=HTMLResponse)
@router.get("/changelog/{public_id}/{slug}", response_class=HTMLResponse)
async def entry_page(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str,
                     slug: str | None = None) -> Response:
    release = changelog.get_release(session, viewer, public_id)
    return render(request, "changelog/entry.html", {"release": release})
