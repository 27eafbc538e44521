"""/api/v1: the read API, on the same services as the pages.

What a caller sees is decided by the same `visible_items(viewer)` as the pages: signed-out callers get
published public items only, and a hidden item is answered exactly like a missing one (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from app.api.schemas import ErrorBody, ItemDetail, ItemPage, ItemPublic, ValidationErrorBody
from app.deps import CurrentViewer, DbSession
from app.roadmap import service as roadmap

router = APIRouter(prefix="/api/v1", tags=["items"])

_SLUG = r"^[a-z0-9][a-z0-9-]*$"


def _slug_filter(what: str) -> Any:
    return Query(max_length=60, pattern=_SLUG, description=f"Only {what} (its slug).")

_INVALID: dict[int | str, dict[str, Any]] = {
    422: {"model": ValidationErrorBody, "description": "A parameter is invalid; `fields` says which and why."},
}
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody, "description": "No such item, or one you may not see (the two look the same)."},
}


@router.get("/items", response_model=ItemPage, responses=_INVALID, summary="List roadmap items",
            response_description="One page of items.")
async def list_items(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    product: Annotated[str | None, _slug_filter("this product")] = None,
    tag: Annotated[str | None, _slug_filter("items with this tag")] = None,
    stage: Annotated[str | None, _slug_filter("this stage, e.g. `planned`")] = None,
    sort: Annotated[roadmap.Sort, Query(description="`newest` published first, or most recently `updated`.")]
    = roadmap.Sort.newest,
    page: Annotated[int, Query(ge=1, le=10_000, description="Page number, from 1.")] = 1,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page.")] = roadmap.PAGE_SIZE,
) -> ItemPage:
    """The roadmap items you may see, newest first unless `sort` says otherwise.

    Filters combine (an item must match all of them); a slug that matches nothing gives an empty page,
    not an error. `total` counts the matching items over all pages.
    """
    filters = roadmap.Filters(product=product, tag=tag, stage=stage, sort=sort)
    items, total = roadmap.list_items(session, viewer, filters, page=page, per_page=per_page)
    base_url = request.app.state.settings.base_url
    return ItemPage(items=[ItemPublic.of(i, base_url=base_url) for i in items], total=total, page=page,
                    per_page=per_page)


@router.get("/items/{id}", response_model=ItemDetail, responses={**_NOT_FOUND, **_INVALID},
            summary="Get one roadmap item", response_description="The item.")
async def get_item(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    id: Annotated[str, Path(max_length=64, description="The item's public id, as in its URL `/items/{id}/…`.")],
) -> ItemDetail:
    """One item with its release notes and the public timeline of its stage changes.

    An item that does not exist and one you may not see both answer 404 with the same body.
    """
    item = roadmap.get_visible_item(session, viewer, id)
    timeline = roadmap.get_timeline(session, item)
    return ItemDetail.of_item(item, timeline, base_url=request.app.state.settings.base_url)
