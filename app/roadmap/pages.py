"""The item page, composed in one place, and the vote state of the board's cards.

The item page shows the item, its timeline, its discussion (comments) and its vote widget. Its own route
(app/roadmap/views.py) serves it through `serve_item_page`, from the page cache for visitors; the comment
and vote routes, when they refuse a form, call `render_item_page` with the item and the refused form
(`CommentForm`, `VoteForm`: what was typed and why), so no view module has to import another and no page
state travels on the request.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from app.accounts.viewer import Viewer
from app.discussion import service as discussion
from app.errors import NotFound
from app.feedback import service as feedback
from app.notify import service as notify
from app.pagecache import at_canonical, cached_render_off_loop, canonical_address
from app.parsing import parse_int
from app.roadmap import merge as merging
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.tech import service as tech
from app.voting import service as voting
from app.web import render

ITEM_PARAMS = frozenset({"page"})  # the comments' page
TEMPLATE = "roadmap/item.html"


@dataclass(frozen=True, slots=True)
class VoteForm:
    """A refused vote form: what was typed, the messages per field, and a rate limit's notice."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    limited: str = ""


@dataclass(frozen=True, slots=True)
class CommentForm:
    """A refused comment or reply form: what was typed (`body`, `parent`) and the messages per field."""

    values: dict[str, str] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)


async def serve_item_page(request: Request, session: Session, viewer: Viewer, public_id: str,
                          slug: str | None = None) -> Response:
    """The item page at /items/{public_id}/{slug}, or the redirect to its right address."""
    # Kept as for the address that says only the comments' page it shows (`page=2`, never `page=02` or `page=x`), and
    # a page past the discussion's end leads to its last: made-up values cannot each be a page kept (a walk-through's
    # 2,500 of them pushed the board out of the cache).
    asked = _page_number(request.query_params.get("page"))
    request = at_canonical(request, _page_params(asked))

    def build(session: Session) -> dict[str, Any] | Response:
        try:
            item = roadmap.get_visible_item(session, viewer, public_id)
        except NotFound:  # a merged item leads to the one it was merged into, for those who may see that one
            target = merging.find_merge_target(session, viewer, public_id)
            return RedirectResponse(target.path, status_code=301, headers=merging.REDIRECT_HEADERS)
        if (slug or "") != item.slug:  # its one address (with no slug: a title without Latin letters), at the page asked
            return RedirectResponse(_at_page(item, asked), status_code=301)
        context = _context(request, session, viewer, item)
        shown = context["comments"].page
        if shown != asked:
            return RedirectResponse(_at_page(item, shown), status_code=302)
        return context

    # Signed-in people get their own vote box, follow button and comment forms: cached for visitors only. The vote
    # box shows the count outside a slot: kept under the votes revision too. Made in a thread (a signed-in person's,
    # never kept, 5-8 ms; a redirect from an address without the slug, 4 ms): app.db.OffLoopMiddleware.
    return await cached_render_off_loop(request, session, viewer, TEMPLATE, build, params=ITEM_PARAMS,
                                        signed_in_too=False, counts_in_layout=True)


def render_item_page(request: Request, session: Session, viewer: Viewer, item: Item, *,
                     vote_form: VoteForm | None = None, comment_form: CommentForm | None = None,
                     status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """The item page as its own route shows it, with a refused form kept as it was typed (never cached).

    The item is read again through the visibility rule with what the page shows of it (product, stage,
    tags): a vote or comment route loaded only what it needed.
    """
    item = roadmap.get_visible_item(session, viewer, item.public_id)
    context = _context(request, session, viewer, item, vote_form=vote_form, comment_form=comment_form)
    return render(request, TEMPLATE, context, status_code=status_code, headers=headers)


def _context(request: Request, session: Session, viewer: Viewer, item: Item, *,
             vote_form: VoteForm | None = None, comment_form: CommentForm | None = None) -> dict[str, Any]:
    return {"item": item, "timeline": roadmap.get_timeline(session, item),
            "delivered": tech.public_progress(session, item),
            "comments": discussion_for(request, session, viewer, item, refused=comment_form),
            # Staff (never served a kept page) answer officially: the form says how many would be told.
            "answer_audience": notify.count_answer_audience(session, item=item, actor=viewer.user)
            if viewer.is_staff and viewer.user is not None else None,
            **vote_widget_for_item_page(session, viewer, item, refused=vote_form)}


def _at_page(item: Item, page: int) -> str:
    """The item page's one address for a page of its comments."""
    return canonical_address(item.path, _page_params(page))


def _page_params(page: int) -> list[tuple[str, str | None]]:
    """The item page's parameters for a page of its comments: none for the first."""
    return [("page", str(page) if page > 1 else None)]


def _page_number(value: str | None) -> int:
    """`?page=` of the item page; anything that is not a page number is the first page."""
    return parse_int(value, minimum=1, maximum=99_999) or 1


def discussion_for(request: Request, session: Session, viewer: Viewer, item: Item, *,
                   refused: CommentForm | None = None) -> discussion.Discussion:
    """The `comments` of the item page (the page of them `?page=` asks for), with a refused form's text and
    message when there was one: a refused reply shows the page its thread is on, where the form is."""
    page = _page_number(request.query_params.get("page"))
    if refused is not None and refused.values.get("parent"):
        try:
            target = discussion.get_comment(session, viewer=viewer, public_id=refused.values["parent"])
        except NotFound:
            target = None
        if target is not None and target.item.id == item.id:
            page = discussion.page_of(session, viewer=viewer, comment=target.comment)
    result = discussion.list_comments(session, viewer=viewer, item=item, page=page)
    if refused is not None:
        result.form, result.errors = refused.values, refused.errors
    return result


# --- the vote widget's state on the item page and on the board's cards -----------------------------------


def vote_widgets_for_cards(session: Session, viewer: Viewer, items: list[Item]) -> dict[str, Any]:
    """`vote_states` for the cards: item id → VoteState (one query for the viewer's own votes)."""
    return {"vote_states": voting.card_states(session, viewer=viewer, items=items)}


def vote_widget_for_item_page(session: Session, viewer: Viewer, item: Item, *,
                              refused: VoteForm | None = None) -> dict[str, Any]:
    """`vote` (VoteState), `following`, and a refused vote form's text and messages when there was one."""
    form = refused or VoteForm()
    state = voting.vote_state(session, viewer=viewer, item=item)
    if viewer.user is not None:  # their own "tell us why", shown back to them and editable in the form
        state = replace(state, reason=feedback.reason_of(session, item=item, author=viewer.user))
    return {"vote": state,
            "following": voting.is_following(session, item=item, user=viewer.user),
            "vote_form": form.values, "vote_errors": form.errors, "vote_limited": form.limited}
