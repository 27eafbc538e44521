"""Public roadmap pages: the board, the Now / Next / Later view, item pages, search (the changelog is app/changelog)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.routing import Route

from app.accounts.viewer import Viewer
from app.deps import CurrentViewer, DbSession, as_the_app_would
from app.metrics import NamedRoute
from app.pagecache import PageCache, at_canonical, cached_render, cached_render_off_loop, canonical_address
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import search as search_service
from app.roadmap import service as roadmap
from app.roadmap.pages import serve_item_page, vote_widgets_for_cards
from app.roadmap.timeframes import Timeframe

router = APIRouter(include_in_schema=False)

# Slugs are [a-z0-9-]; anything else cannot match and must not reach the database (PostgreSQL refuses
# a NUL byte in a string with an error). Empty is allowed: the filter form sends "All products" as "".
Slug = Annotated[str | None, Query(max_length=60, pattern=r"^[a-z0-9-]*$")]


BOARD_PARAMS = frozenset({"product", "tag", "stage", "sort", "view", "page"})


@router.get("/", response_class=HTMLResponse)
async def board(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    product: Slug = None,
    tag: Slug = None,
    stage: Slug = None,
    sort: Slug = None,
    view: Slug = None,
    page: Annotated[int, Query(ge=1, le=10_000), ASCII_DIGITS] = 1,
) -> Response:
    # What the address asks for, as the page reads it: a sort that is not one (or not this viewer's), another view
    # than Now/Next/Later or a page of a list that has none are the defaults, as the page shows them, and a page past
    # the list's end leads to its last page; a product, tag or stage no one has is `UNKNOWN_SLUG` (nothing matches
    # it, as nothing matched the name sent). The page is made and kept as for the address that says only that
    # (`_board_params`): made-up values, repeated or reordered parameters cost what that address costs, and cannot
    # crowd out the real pages (each was a page rendered anew on the event loop: a flood of them held up every
    # worker's kept board).
    known = roadmap.known_slugs(session)
    shown = "horizon" if view == "horizon" else "board"
    if shown == "horizon":
        stage = None  # Now/Next/Later has no stage filter to show, nor to clear: a stage there is a made-up value too
    filters = roadmap.for_viewer(session, viewer, roadmap.Filters.parse(
        product=_known(product, known.products), tag=_known(tag, known.tags), stage=_known(stage, known.stages),
        sort=sort))
    page = page if shown == "board" and filters.stage not in (None, UNKNOWN_SLUG) else 1
    if page > 1 and page > (last := roadmap.page_count(session, viewer, filters)):
        # Past the end: to the last page's own address, as the changelog's and the comments' pages do (the number
        # asked for is not kept, nor shown in the address bar as if it were a page)
        return RedirectResponse(canonical_address("/", _board_params(filters, sort_sent=sort, view=shown, page=last)),
                                status_code=302)
    request = at_canonical(request, _board_params(filters, sort_sent=sort, view=shown, page=page))

    def build(session: Session) -> dict[str, Any]:
        context: dict[str, Any] = {
            "filters": filters,
            "products": roadmap.list_products(session),
            "stages": roadmap.list_stages(session),
            "tags": roadmap.list_tags(session),
            "sorts": roadmap.sort_options(session, viewer),
            "view": shown,
        }
        if context["view"] == "horizon":
            context["horizons"] = roadmap.get_horizons(session, viewer, filters)
            context["horizon_labels"] = {Timeframe.now: "Now", Timeframe.next: "Next", Timeframe.later: "Later"}
        elif filters.stage:
            items, total = roadmap.list_items(session, viewer, filters, page=page)
            context.update(items=items, total=total, page=page, pages=pages_of(total, roadmap.PAGE_SIZE),
                           stage=next((s for s in context["stages"] if s.slug == filters.stage), None))
        else:
            context["columns"] = roadmap.get_board(session, viewer, filters)
        cards = (context.get("items") or [i for c in context.get("columns", []) for i in c.items]
                 or [i for group in context.get("horizons", {}).values() for i in group])
        context.update(vote_widgets_for_cards(session, viewer, cards))
        return context

    # Sorted by votes, the order itself follows the counts: kept under the votes revision too.
    return cached_render(request, session, viewer, "roadmap/board.html", build, params=BOARD_PARAMS,
                         counts_in_layout=filters.sort in roadmap.VOTE_SORTS)


# What a filter naming no product, tag or stage there is becomes: never a slug (slugify strips dashes at the ends), and
# one the address may carry (the page's own links keep it).
UNKNOWN_SLUG = "-"


def _known(slug: str | None, known: frozenset[str]) -> str | None:
    return (slug if slug in known else UNKNOWN_SLUG) if slug else None


def _board_params(filters: roadmap.Filters, *, sort_sent: str | None, view: str, page: int
                  ) -> list[tuple[str, str | None]]:
    """The board's address for what it shows, its parameters in the filter form's order (templates/roadmap/
    _filters.html; the pages' own links keep it, app.web's `query`): each filter in use, the sort when one was asked
    for (the form sends the default too), the page after the first, the Now/Next/Later view."""
    return [("product", filters.product), ("tag", filters.tag), ("stage", filters.stage),
            ("sort", sort_sent if sort_sent == filters.sort.value else None),
            ("page", str(page) if page > 1 else None), ("view", view if view == "horizon" else None)]


@router.get("/items/{public_id}", response_class=HTMLResponse)
@router.get("/items/{public_id}/{slug}", response_class=HTMLResponse)
async def item_page(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str,
                    slug: str | None = None) -> Response:
    return await serve_item_page(request, session, viewer, public_id, slug)


SEARCH_RESULTS = 30  # hits a search page shows
# Search pages are kept like the board, in a share of the page cache of their own: anyone can make up queries in
# any number, and they must push out each other, never the boards (about 300 pages of 12 k characters per worker).
SEARCH_GROUP = "search"
SEARCH_KEPT_CHARACTERS = 4_000_000


def keep_search_pages(cache: PageCache) -> None:
    """Give the search pages their own share of `cache` (at start-up)."""
    cache.bound(SEARCH_GROUP, SEARCH_KEPT_CHARACTERS)


SEARCH_QUERY_MAX = 200  # characters of `q`; a longer one is answered 422, as FastAPI's Query(max_length=...) did


def direct_routes() -> list[Route]:
    """GET /search (HEAD too) as a plain Starlette route, for the app to put ahead of its routers: a never-repeated
    search is rendered anew every time, and FastAPI solving its dependencies was a tenth of its CPU (bench/README.md).
    Not in the OpenAPI description, as before."""
    return [NamedRoute("/search", _search_direct, methods=["GET"], name="search_page", include_in_schema=False)]


async def _search_direct(request: Request) -> Response:
    viewer = await as_the_app_would(request)
    q = request.query_params.get("q", "")  # the last of several, as FastAPI takes a query parameter
    if len(q) > SEARCH_QUERY_MAX:
        raise RequestValidationError([{"type": "string_too_long", "loc": ("query", "q"), "input": q,
                                       "msg": f"String should have at most {SEARCH_QUERY_MAX} characters",
                                       "ctx": {"max_length": SEARCH_QUERY_MAX}}])
    return await search_page(request, request.state.db.session, viewer, q)


async def search_page(request: Request, session: Session, viewer: Viewer, q: str) -> Response:
    def build(session: Session) -> dict[str, Any]:
        # One hit more than the page shows says whether there are more, without counting them all.
        hits = search_service.found(session, viewer, q, limit=SEARCH_RESULTS + 1) if q.strip() else []
        return {"q": q, "hits": hits[:SEARCH_RESULTS], "more": len(hits) > SEARCH_RESULTS,
                "has_words": bool(search_service.query_words(q))}

    # The hits depend on the content and the audience only (no counts, no "3 minutes ago"): kept as the board is.
    # Searched and rendered in a thread, the event loop free meanwhile (app.db.OffLoopMiddleware).
    return await cached_render_off_loop(request, session, viewer, "roadmap/search.html", build,
                                        params=frozenset({"q"}), group=SEARCH_GROUP)

