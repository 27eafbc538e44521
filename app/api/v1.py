"""/api/v1: the roadmap API, on the same services as the pages.

What a caller sees is decided by the same `visible_items(viewer)` as the pages: signed-out callers get
published public items only, and a hidden item is answered exactly like a missing one (404).

A staff API token (`Authorization: Bearer ahead_…`, read by app/deps.py) makes the caller its owner, a staff
member, so these endpoints then answer as staff see them; a bad token is a 401, never a silent visitor.

Writes (votes) are for signed-in people: the session cookie of the portal plus an `X-CSRF-Token` header
carrying the token of the page's `<meta name="csrf-token">` (the same check as the portal's forms: the token
belongs to the session it was issued for, and a browser's `Origin` must be the portal's own).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.responses import RedirectResponse

from app.accounts.viewer import Viewer
from app.api.schemas import (
    CommentPage,
    CommentThread,
    ErrorBody,
    ItemDetail,
    ItemPage,
    ItemPublic,
    MyVotePublic,
    MyVotes,
    ValidationErrorBody,
    VoteCreate,
    VoteStatePublic,
)
from app.db import run_off_loop
from app.deps import CurrentViewer, DbSession, Voter
from app.discussion import service as discussion
from app.errors import NotAuthenticated, NotFound
from app.parsing import ASCII_DIGITS
from app.portal.service import counts_shown
from app.roadmap import merge as merging
from app.roadmap import service as roadmap
from app.security import verify_csrf
from app.voting import commands
from app.voting import service as voting
from app.voting.views import vote_limits

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
_SIGNED_IN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Not signed in: send the portal's session cookie."},
}
_WRITE: dict[int | str, dict[str, Any]] = {
    **_SIGNED_IN,
    403: {"model": ErrorBody, "description": "The `X-CSRF-Token` header is missing or does not match the "
                                             "session and its CSRF cookie (`csrf_failed`), or the request's "
                                             "`Origin` is not the portal's (`cross_origin`)."},
    429: {"model": ErrorBody, "description": "Too many votes in a short time (per person, and per address); "
                                             "`Retry-After` says when to try again."},
}
_BAD_BODY: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "The body is not valid JSON."},
}
_CLOSED: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorBody, "description": "The item takes no votes: it is released, declined or merged. "
                                             "`detail` says which, e.g. “Released — voting is closed.”"},
}
_ID = Path(max_length=64, description="The item's public id, as in its URL `/items/{id}/…`.")


@router.get("/items", response_model=ItemPage, responses=_INVALID, summary="List roadmap items",
            response_description="One page of items.")
async def list_items(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    product: Annotated[str | None, _slug_filter("this product")] = None,
    tag: Annotated[str | None, _slug_filter("items with this tag")] = None,
    stage: Annotated[str | None, _slug_filter("this stage, e.g. `planned`")] = None,
    sort: Annotated[roadmap.Sort, Query(description="`newest` published first, `top` most voted, `trending` most "
                                                    "votes in the last 30 days, or most recently `updated`. When "
                                                    "the portal has vote counts hidden from you, `top` and "
                                                    "`trending` give `newest` order instead (the order would give "
                                                    "the counts away); the answer's `sort` says which order "
                                                    "you got.")]
    = roadmap.Sort.newest,
    page: Annotated[int, Query(ge=1, le=10_000, description="Page number, from 1."), ASCII_DIGITS] = 1,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page."), ASCII_DIGITS] = roadmap.PAGE_SIZE,
) -> ItemPage:
    """The roadmap items you may see, newest first unless `sort` says otherwise.

    Filters combine (an item must match all of them); a slug that matches nothing gives an empty page,
    not an error. `total` counts the matching items over all pages.
    """
    def listed() -> ItemPage:
        filters = roadmap.for_viewer(session, viewer, roadmap.Filters(product=product, tag=tag, stage=stage, sort=sort))
        items, total = roadmap.list_items(session, viewer, filters, page=page, per_page=per_page)
        base_url = request.app.state.settings.base_url
        mine = voting.votes_of(session, user=viewer.user, item_ids=[i.id for i in items])
        shown = counts_shown(session, viewer)
        return ItemPage(items=[ItemPublic.of(i, base_url=base_url, my_vote=mine.get(i.id), show_count=shown)
                               for i in items], total=total, page=page, per_page=per_page, sort=filters.sort)

    # In a thread, the event loop free meanwhile: nothing of it is kept (app.db.OffLoopMiddleware)
    return await run_off_loop(request, listed)


_MERGED: dict[int | str, dict[str, Any]] = {
    301: {"description": "The item was merged into another one, which you may see: `Location` is that item's "
                         "API URL. (When you may not see it, the answer is 404.)",
          "headers": {"Location": {"description": "The item it was merged into, e.g. `/api/v1/items/k7m2xq9p`.",
                                   "schema": {"type": "string"}}}},
}


@router.get("/items/{id}", response_model=ItemDetail, responses={**_MERGED, **_NOT_FOUND, **_INVALID},
            summary="Get one roadmap item", response_description="The item.")
async def get_item(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    id: Annotated[str, Path(max_length=64, description="The item's public id, as in its URL `/items/{id}/…`.")],
) -> ItemDetail | RedirectResponse:
    """One item with its release notes and the public timeline of its stage changes.

    An item that does not exist and one you may not see both answer 404 with the same body. An item merged
    into another answers 301 to that item, for callers who may see it.
    """
    def read() -> ItemDetail | RedirectResponse:
        try:
            item = roadmap.get_visible_item(session, viewer, id)
        except NotFound:
            target = merging.find_merge_target(session, viewer, id)
            return RedirectResponse(f"/api/v1/items/{target.public_id}", status_code=301,
                                    headers=merging.REDIRECT_HEADERS)
        timeline = roadmap.get_timeline(session, item)
        state = voting.vote_state(session, viewer=viewer, item=item)
        return ItemDetail.of_item(item, timeline, base_url=request.app.state.settings.base_url, my_vote=state.mine,
                                  show_count=state.count is not None)

    # In a thread, the event loop free meanwhile (app.db.OffLoopMiddleware): 6-7 ms each, and nothing kept
    return await run_off_loop(request, read)


# --- comments ------------------------------------------------------------------------------------------


@router.get("/items/{id}/comments", response_model=CommentPage, tags=["comments"],
            responses={**_NOT_FOUND, **_INVALID}, summary="List an item's comments",
            response_description="One page of the discussion.")
async def list_comments(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    id: Annotated[str, _ID],
    after: Annotated[str | None, Query(max_length=16, pattern=r"^[a-z0-9]+$",
                                       description="`next_cursor` of the previous page; leave it out for the "
                                                   "first page.")] = None,
    per_page: Annotated[int, Query(ge=1, le=100, description="Threads per page (a thread comes with all its "
                                                            "replies)."), ASCII_DIGITS] = discussion.PAGE_SIZE,
) -> CommentPage:
    """The item's discussion as its page shows it, oldest thread first, one page at a time.

    Follow `next_cursor` until it is null to read every thread exactly once, even while people comment:
    the cursor marks a position, not a page number. Hidden comments are left out except for staff, who
    receive them with `hidden: true`. An unknown `after` answers 422.
    """
    def read() -> CommentPage:
        item = roadmap.get_visible_item(session, viewer, id)
        page = discussion.list_comments(session, viewer=viewer, item=item, after=after, per_page=per_page)
        return CommentPage(pinned=CommentThread.of(page.pinned) if page.pinned else None,
                           comments=[CommentThread.of(t) for t in page.paged], total=page.count,
                           next_cursor=page.next_cursor)

    return await run_off_loop(request, read)


# --- votes ---------------------------------------------------------------------------------------------


def _voter(viewer: Viewer) -> None:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to vote: send the portal's session cookie.")


def _public(item: Any, state: voting.VoteState) -> VoteStatePublic:
    return VoteStatePublic(item=item.public_id, my_vote=state.mine.key if state.mine else None,
                           vote_count=state.count)


@router.post("/items/{id}/vote", response_model=VoteStatePublic, tags=["votes"],
             dependencies=[Depends(verify_csrf)],
             responses={**_BAD_BODY, **_WRITE, **_NOT_FOUND, **_CLOSED, **_INVALID},
             summary="Vote for an item, or change your vote's importance", response_description="Your vote.")
async def vote_for_item(request: Request, session: DbSession, viewer: Voter,
                        id: Annotated[str, _ID], body: VoteCreate) -> VoteStatePublic:
    """Vote with an importance; voting again changes the importance (still one vote per person).

    A `reason` is stored as private feedback for the product team, attached to the item: one per person and
    item, so a new `reason` replaces the one you gave before, and an empty or absent one leaves it as it is.
    Voting follows the item. Released and declined items take no votes (409); a merged item answers 404.
    """
    _voter(viewer)
    done = commands.vote(session, viewer=viewer, public_id=id, importance=body.importance,
                         reason=body.reason if body.reason.strip() else None, limits=vote_limits(request))
    return _public(done.item, done.state)


@router.delete("/items/{id}/vote", response_model=VoteStatePublic, tags=["votes"],
               dependencies=[Depends(verify_csrf)],
               responses={**_WRITE, **_NOT_FOUND, **_CLOSED, **_INVALID},
               summary="Withdraw your vote", response_description="Your vote is gone (`my_vote` is null).")
async def withdraw_vote(request: Request, session: DbSession, viewer: Voter,
                        id: Annotated[str, _ID]) -> VoteStatePublic:
    """Withdraw your vote; withdrawing when you had not voted changes nothing and is not an error.

    Released, declined and merged items keep their votes as they were (409).
    """
    _voter(viewer)
    done = commands.withdraw(session, viewer=viewer, public_id=id, limits=vote_limits(request))
    return _public(done.item, done.state)


@router.api_route("/items/{id}/vote", methods=["GET", "HEAD", "PUT", "PATCH", "OPTIONS"], include_in_schema=False)
async def vote_methods(id: str) -> None:
    """Two routes share this path: a 405 names both of their methods in `Allow`, not just the first's."""
    raise HTTPException(status_code=405, headers={"Allow": "POST, DELETE"})


@router.get("/me/votes", response_model=MyVotes, tags=["votes"], responses={**_SIGNED_IN},
            summary="List your votes", response_description="Your votes.")
async def my_votes(request: Request, session: DbSession, viewer: CurrentViewer) -> MyVotes:
    """Your votes on items you may see, most recent first, including votes the product team recorded
    for you."""
    _voter(viewer)
    base_url = request.app.state.settings.base_url
    shown = counts_shown(session, viewer)
    votes = voting.list_my_votes(session, viewer=viewer)
    return MyVotes(votes=[
        MyVotePublic(item=ItemPublic.of(v.item, base_url=base_url, my_vote=v.importance, show_count=shown),
                     importance=v.importance.key, voted_at=v.voted_at, recorded_by_team=v.captured)
        for v in votes
    ])
