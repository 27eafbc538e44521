"""Rendered pages kept in memory, keyed on the content revision, with the per-person parts left open.

The board and the item page cost a dozen queries and fifty card templates to render, and they are the
same for everyone who sees the same items. So each worker keeps what it rendered, keyed on

    (template, path, query, audience, minute)

under the current content revision (app/revision.py): a vote, an edit or a settings change anywhere
makes every worker render afresh on its next request, so a cached page is never older than the data.

What differs per person is left open while rendering, as markers the template emits in place of the
value, and filled in per request:

* the request's CSRF token (every form, and the meta tag static/app.js reads);
* ``account``  the header's name and sign-out form (signed-in people only; a visitor's is in the page);
* ``flashes``  the one-time messages from a redirect;
* ``vote``     a card's vote widget: kept unvoted, and for each importance once someone who voted
               that way asks (from the card's facts, without the item); the viewer's own votes for
               the cards are one query.

The audience (app.roadmap.service.audience) is what decides which items a viewer may see; staff, who
see drafts and internal items, are never served from the cache. The minute is in the key because
cards say "updated 3 minutes ago". A page is cached only when it was read in a read-only transaction
(a GET), never from a transaction that is changing things.

Markers carry a random per-process prefix, so nothing a customer types can forge one.
"""

from __future__ import annotations

import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from markupsafe import Markup
from sqlalchemy.orm import Session

from app import revision
from app.accounts.viewer import Viewer
from app.roadmap.models import Item
from app.roadmap.visibility import audience
from app.security import clear_flash_cookie, csrf_token
from app.voting import service as voting
from app.voting.models import Importance
from app.web import page_context, read_flashes, render, templates

_NONCE = secrets.token_hex(8)
_PREFIX = f"\x00{_NONCE}:"
_MARKER = re.compile(re.escape(_PREFIX) + r"(\w+):([^\x00]*)\x00")
# Not a slot: replaced in the finished page in one pass (it is in every form, widgets included).
_CSRF = Markup(f"\x00{_NONCE}!csrf\x00")  # nosec B704 # a marker made of a random nonce, no outside input
_UNVOTED = ""

MAX_CHARACTERS = 32_000_000  # per worker: a board is ~50 k characters, a customer's with its widgets ~250 k


def _marker(kind: str, arg: str = "") -> Markup:
    return Markup(f"{_PREFIX}{kind}:{arg}\x00")  # nosec B704 # kind is a literal, arg an integer id


@dataclass(frozen=True, slots=True)
class Slot:
    kind: str
    arg: str


@dataclass(frozen=True, slots=True)
class CardFacts:
    """What a card's vote widget shows of its item: kept so that a later request can have the widget
    for a vote of its own rendered without the item (whose session is gone)."""

    id: int
    public_id: str
    title: str
    path: str
    vote_count: int
    closed: str | None

    def voting_closed_reason(self) -> str | None:
        return self.closed


@dataclass(slots=True)
class Page:
    """A rendered page cut at its open parts."""

    parts: list[str | Slot]
    # Vote widgets per card: item id → importance key ("" unvoted) → HTML; the voted variants are
    # rendered when someone who voted that way first asks for the page.
    widgets: dict[int, dict[str, str]] = field(default_factory=dict)
    cards: dict[int, CardFacts] = field(default_factory=dict)
    show_counts: bool = True

    @property
    def size(self) -> int:
        return (sum(len(p) for p in self.parts if isinstance(p, str))
                + sum(len(html) for by_state in self.widgets.values() for html in by_state.values()))


class PageCache:
    """One worker's pages for the current revision, the least recently used dropped beyond a size."""

    def __init__(self, max_characters: int = MAX_CHARACTERS) -> None:
        self.max_characters = max_characters
        self._revision: int | None = None
        self._pages: OrderedDict[tuple[Any, ...], tuple[Page, int]] = OrderedDict()
        self._characters = 0
        self.hits = self.misses = 0

    def get(self, rev: int, key: tuple[Any, ...]) -> Page | None:
        if rev != self._revision:
            self.clear()
            self._revision = rev
        entry = self._pages.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._pages.move_to_end(key)
        self.hits += 1
        return entry[0]

    def put(self, rev: int, key: tuple[Any, ...], page: Page) -> None:
        size = page.size
        if rev != self._revision or size > self.max_characters:
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self._characters -= old[1]
        self._pages[key] = (page, size)
        self._characters += size
        while self._characters > self.max_characters:
            _, (_, dropped) = self._pages.popitem(last=False)
            self._characters -= dropped

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        self._pages.clear()
        self._characters = 0


def cached_render(request: Request, session: Session, viewer: Viewer, template: str,
                  build: Callable[[], dict[str, Any] | Response], *, params: frozenset[str] = frozenset(),
                  signed_in_too: bool = True) -> Response:
    """`render(request, template, build())`, from this worker's cache when it may be.

    `build` runs only on a miss; it may return a response instead of a context (a redirect), which is
    sent as it is and not cached. `params` are the query parameters the page reads: an address with
    any other is rendered but not kept, so made-up addresses cannot crowd out the real pages.
    `signed_in_too=False` caches the page for signed-out visitors only (the item page, whose comment
    and follow forms are per person throughout).
    """
    who = audience(viewer)
    cache: PageCache | None = getattr(request.app.state, "pages", None)
    if (cache is None or who is None or request.state.db.is_write
            or (viewer.user is not None and not signed_in_too)
            or any(name not in params for name in request.query_params)):
        context = build()
        return context if isinstance(context, Response) else render(request, template, context)
    rev = revision.current(session)
    key = (template, request.url.path, request.url.query, who, int(time.time() // 60))
    page = cache.get(rev, key)
    if page is None:
        context = build()
        if isinstance(context, Response):
            return context
        page = _capture(request, viewer, template, context)
        cache.put(rev, key, page)
    return _respond(request, session, viewer, page)


def _capture(request: Request, viewer: Viewer, template: str, context: dict[str, Any]) -> Page:
    signed_in = viewer.user is not None
    page = Page(parts=[], show_counts=context.get("show_counts", True))

    def vote_slot(item: Item) -> Markup:
        """A card's widget: unvoted now; for a vote of the viewer's own, on request (`_widget`)."""
        if item.id not in page.widgets:
            facts = CardFacts(id=item.id, public_id=item.public_id, title=item.title, path=item.path,
                              vote_count=item.vote_count, closed=item.voting_closed_reason())
            page.cards[item.id] = facts
            page.widgets[item.id] = {_UNVOTED: _widget(request, viewer, page, facts, None)}
        return _marker("vote", str(item.id))

    ctx = {**page_context(request, context, csrf=_CSRF, flashes=[]), "request": request, "viewer": viewer,
           "my_votes": {}, "slot": _marker, "vote_slot": vote_slot, "account_slot": signed_in}
    html = templates.env.get_template(template).render(ctx)
    pieces = _MARKER.split(html)
    for i in range(0, len(pieces), 3):
        if pieces[i]:
            page.parts.append(pieces[i])
        if i + 2 < len(pieces):
            page.parts.append(Slot(pieces[i + 1], pieces[i + 2]))
    return page


def _widget(request: Request, viewer: Viewer, page: Page, card: CardFacts, mine: Importance | None) -> str:
    return templates.env.get_template("voting/_vote.html").render(
        request=request, viewer=viewer, item=card, widget="card", csrf_token=_CSRF, show_counts=page.show_counts,
        my_votes={card.id: mine} if mine else {})


def _respond(request: Request, session: Session, viewer: Viewer, page: Page) -> HTMLResponse:
    token = csrf_token(request)
    flashes = read_flashes(request)
    mine = (voting.votes_of(session, user=viewer.user, item_ids=page.widgets)
            if viewer.user is not None and page.widgets else {})
    out: list[str] = []
    for part in page.parts:
        if isinstance(part, str):
            out.append(part)
        elif part.kind == "vote":
            item_id = int(part.arg)
            state = mine.get(item_id)
            variants = page.widgets[item_id]
            key = state.key if state else _UNVOTED
            if key not in variants:
                variants[key] = _widget(request, viewer, page, page.cards[item_id], state)
            out.append(variants[key])
        elif part.kind == "flashes":
            if flashes:
                out.append(templates.env.get_template("_flashes.html").render(flashes=flashes))
        elif part.kind == "account":
            out.append(templates.env.get_template("_account.html").render(
                request=request, viewer=viewer, csrf_token=token))
    body = "".join(out).replace(_CSRF, token)
    response = HTMLResponse(body)
    if flashes:
        clear_flash_cookie(request, response)
    return response
