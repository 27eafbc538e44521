"""Rendered pages kept in memory, keyed on the content revision, with the per-person parts left open.

The board and the item page cost a dozen queries and fifty card templates to render, and they are the
same for everyone who sees the same items. So each worker keeps what it rendered, keyed on

    (template, path, query, audience, minute)

under the current content revision (app/revision.py): an edit or a settings change anywhere makes every
worker render afresh on its next request, so a cached page is never older than the data. A vote moves the
votes revision only: the counts are filled into the page's vote slots per request (app/voting/widget.py), and
a page that shows counts elsewhere (sorted by votes, the item page's vote box) is keyed on that revision too.

What differs per person is left open while rendering: the template calls `slot(kind, value)` where it
would show such a part, and the page keeps a marker there. Each kind of slot has a **filler**,
registered with the cache (`PageCache.register`), that says what of `value` to keep (`capture`) and
fills all the page's slots of its kind per request (`fill`, one call per page, so that it can ask the
database once for all of them). It may keep what it rendered with the page (`Filling.variant`), for the
next person who needs the same. This module knows two kinds, both about the page's frame:

* ``account``  the header's name and sign-out form (signed-in people only; a visitor's is in the page);
* ``flashes``  the one-time messages from a redirect.

Other domains register theirs: the voting domain the cards' vote widgets (app/voting/widget.py). The
request's CSRF token is not a slot: it is in every form, in the fillers' HTML too, and replaced in the
finished page in one pass.

The audience (app.roadmap.visibility.audience) is what decides which items a viewer may see; staff, who
see drafts and internal items, are never served from the cache. The minute is in the key because
cards say "updated 3 minutes ago". A page is cached only when it was read in a read-only transaction
(a GET), never from a transaction that is changing things.

The size bound counts everything a page keeps: its text, every variant a filler kept with it (they are
added as people ask for them, and counted then), and each slot's captured value (as
`KEPT_VALUE_CHARACTERS`). Beyond it the least recently used pages go. Pages whose addresses anyone can make
up in any number (a search per query) are put in a group with a bound of its own (`PageCache.bound`,
`cached_render(group=...)`): past it, that group's least recently used go, so they never push out the boards.

Markers carry a random per-process prefix, so nothing a customer types can forge one.

**Finished pages, before the stack** (`KeptPagesMiddleware`). A request with no cookie and no credentials is a
signed-out visitor with nothing of their own to fill in: no flashes, no account corner, their vote widgets the
same for all. When such a page holds no form that needs a CSRF token (a visitor's board, Now / Next / Later,
an item page), its finished answer — the very bytes and headers that went out — is kept with the page, and the
middleware, outside routing, dependencies and the request's transaction, answers the next such request for the
same address from it: after reading the content revision, under which the page must still be kept (a change
anywhere drops it, as for every kept page), and within the same minute. So is a request whose session cookie names
nobody (a session ended in another tab or by an administrator, expired, made up): the app would answer it as a
visitor, with the same bytes, and ResponseMiddleware marks it private as it marks every answer to a request naming
a session. Anything else — another method, a flash message, an `Authorization` or conditional header, an address
not kept — goes through the whole app as before (a live session: see below).

**A minute turning** (`_stale`). A page whose minute has turned is made again by the request that finds it so, which
waits for it: a lone visitor gets this minute's page. Only when the worker is already making pages (a burst after a
quiet spell: every kept page's minute had turned, and the first visitors each waited for the renders of all of them)
is a visitor answered the page kept in one of the last `STALE_MINUTES` minutes under the same revisions, at once, and
the page queued to be made apart from any request (`_refresh`: a session of its own, one page at a time per worker);
those asking for it meanwhile get the same, before the stack. Only relative times ("3 minutes ago") are behind,
until the page is made again.

**Changes by time alone** (`PageCache.changes_at`). A scheduled changelog entry appears at its time with no write to
move the content revision: a page that shows the changelog says when the next one is due, and from that moment the
worker answers none of the pages it kept (all are dropped, as at a new revision), stale ones included.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import secrets
import time
import zlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol, TypeVar
from urllib.parse import unquote_plus, urlencode

from fastapi import Request
from fastapi.responses import Response
from markupsafe import Markup
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from starlette.requests import cookie_parser

from app import metrics, revision
from app.accounts.viewer import ANONYMOUS, Viewer
from app.db import Database, RequestSession, run_off_loop
from app.responses import VISITORS_BYTES, weak_etag
from app.roadmap.visibility import audience
from app.security import FLASH_COOKIE, clear_flash_cookie, csrf_tokens
from app.web import flash_cookie_sent, page_context, read_flashes, render, rendered_at, templates

_NONCE = secrets.token_hex(8)
_PREFIX = f"\x00{_NONCE}:"
_MARKER = re.compile(re.escape(_PREFIX) + r"(\w+):([^\x00]*)\x00")
# Not a slot: replaced in the finished page in one pass (it is in every form, fillers' HTML included).
CSRF_MARKER = Markup(f"\x00{_NONCE}!csrf\x00")  # nosec B704 # a marker made of a random nonce, no outside input
_CSRF_BYTES = str(CSRF_MARKER).encode()
HTML = "text/html; charset=utf-8"

MAX_CHARACTERS = 32_000_000  # per worker: a board is ~50 k characters, a customer's with its widgets ~250 k
# What a slot's captured value counts for in the size bound (a small frozen object: a few ids and a title).
KEPT_VALUE_CHARACTERS = 200
# Filled pieces kept encoded with their digests (the strings are the pages' own kept variants).
MAX_PIECES = 20_000
# What a person's filled slots kept with a page count for, besides a pointer per slot (Page.keep_filled).
FILLED_CHARACTERS = 100
# Addresses of a bounded group's pages remembered as asked for (PageCache.admits): about 200 bytes each.
SIGHTED_KEYS = 20_000
# How many minutes old a kept page may be and still be answered while the worker makes pages for this minute
# (`_stale`): in a burst after a quiet spell, the visitors get it at once rather than each waiting for the renders of
# every page whose minute turned meanwhile. Its content and counts are the current ones (the same revisions); only its
# relative times are behind, until the page is made again (a scheduled entry's time drops it: `PageCache.changes_at`).
STALE_MINUTES = 10

log = logging.getLogger("ahead.pagecache")


class Slot(NamedTuple):
    """One open part of a kept page: its filler's kind and its argument (an item id, or "")."""

    kind: str
    arg: str


class Filler(Protocol):
    """Fills one kind of slot in kept pages, per request."""

    def capture(self, value: Any) -> tuple[str, Any]:
        """While a page is rendered for keeping: the slot's argument (unique in the page for what it
        shows) and what `fill` will need of `value`, kept with the page. Must not keep the request's or
        the viewer's own things: the page is served to everyone of the same audience."""
        ...

    def fill(self, filling: Filling, slots: Sequence[Slot]) -> Sequence[str]:
        """The HTML of these slots (the page's slots of this kind, each once) for this request, in order."""
        ...


@dataclass(slots=True, eq=False)
class Page:
    """A rendered page cut at its open parts, with what its fillers keep."""

    parts: list[str | Slot]
    values: dict[Slot, Any] = field(default_factory=dict)  # what each slot's filler captured
    # Per kind: its slots (each once) and, for each, where it stands in `parts`: filled without a lookup.
    open: dict[str, tuple[list[Slot], list[list[int]]]] = field(default_factory=dict)
    variants: dict[Slot, dict[str, str]] = field(default_factory=dict)  # HTML fillers kept, per slot and variant
    size: int = 0  # characters counted against the cache's bound (`measure`, then each kept variant)
    # The finished answer of a visitor (no session, no flash), when it needs nothing per request: (status, headers,
    # body), as it was under one votes revision (its counts).
    finished: tuple[int, list[tuple[bytes, bytes]], bytes] | None = None
    finished_votes: int | None = None
    digest: str = ""  # of the parts and the slots' places, once per page: the base of every answer's ETag
    group: str | None = None  # the bounded share of the cache it counts against (`PageCache.bound`), if any
    media_type: str = HTML  # what it is answered as (a feed, a sitemap: their own)
    _owner: PageCache | None = None
    _key: tuple[Any, ...] | None = None
    # The addresses (path, query string) the finished answer is answered at: its own, and a few it was asked for with
    # parameters it does not read (a launch's `?ref=` link), the oldest of those going first (`_index_address`)
    _addresses: list[tuple[str, bytes]] = field(default_factory=list)
    # The headers the app sent with this page to a signed-in person (their length and ETag aside), and the
    # addresses (path, query string, audience) the signed-in fast path answers from it (KeptPagesMiddleware).
    signed_in_headers: list[tuple[bytes, bytes]] | None = None
    _signed_in_addresses: list[tuple[str, bytes, Any]] = field(default_factory=list)
    _encoded: list[bytes] | None = None
    _marked: list[tuple[int, list[bytes]]] | None = None
    _filled: dict[tuple[str, int | None], tuple[int, list[str]]] = field(default_factory=dict)
    # Per person (None: a visitor), how the page was last put together for them (`_assemble`)
    _assembled: dict[int | None, _Assembly] = field(default_factory=dict)

    def encoded(self) -> list[bytes]:
        """The parts as UTF-8, made once (and counted against the cache's bound); a slot's place is empty."""
        if self._encoded is None:
            self._encoded = [p.encode() if isinstance(p, str) else b"" for p in self.parts]
            self._marked = [(i, part.split(_CSRF_BYTES)) for i, part in enumerate(self._encoded) if _CSRF_BYTES in part]
            self._add(sum(len(p) for p in self._encoded))
        return self._encoded

    def marked(self) -> list[tuple[int, list[bytes]]]:
        """The encoded parts that hold the CSRF token's marker: (where, the part cut at each marker)."""
        self.encoded()
        assert self._marked is not None  # nosec B101 # made with the encoded parts
        return self._marked

    def filled_for(self, kind: str, viewer_id: int | None, revision: int) -> list[str] | None:
        """What a filler kept of this page's slots of `kind` for one person (None: a visitor) under `revision`."""
        kept = self._filled.get((kind, viewer_id))
        return kept[1] if kept is not None and kept[0] == revision else None

    def keep_filled(self, kind: str, viewer_id: int | None, revision: int, filled: list[str]) -> None:
        """Keep a filler's pieces for one person under `revision` (what it fills them with, not their HTML: the
        strings are the page's own kept variants), counted against the cache's bound."""
        if (kind, viewer_id) not in self._filled:
            self._add(FILLED_CHARACTERS + 8 * len(filled))
        self._filled[(kind, viewer_id)] = (revision, filled)

    def _add(self, added: int) -> None:
        self.size += added
        if self._owner is not None:
            self._owner._grew(self, added)

    def measure(self) -> int:
        self.size = (sum(len(p) for p in self.parts if isinstance(p, str))
                     + len(self.values) * KEPT_VALUE_CHARACTERS
                     + sum(len(html) for by_variant in self.variants.values() for html in by_variant.values())
                     + (len(self.finished[2]) if self.finished is not None else 0)
                     + (sum(len(p) for p in self._encoded) if self._encoded is not None else 0)
                     + sum(FILLED_CHARACTERS + 8 * len(filled) for _, filled in self._filled.values())
                     + sum(assembly.size() for assembly in self._assembled.values()))
        return self.size

    def assembled(self, viewer_id: int | None, filled: list[list[str]]) -> _Assembly | None:
        """How the page was put together for this person the last time, if its slots were filled the same."""
        kept = self._assembled.get(viewer_id)
        return kept if kept is not None and kept.filled == filled else None

    def keep_assembled(self, viewer_id: int | None, assembly: _Assembly) -> None:
        """Keep how the page was put together for this person (pointers to bytes kept anyway: the page's parts and
        the cache's pieces), counted against the cache's bound."""
        before = self._assembled.get(viewer_id)
        self._assembled[viewer_id] = assembly
        self._add(assembly.size() - (before.size() if before is not None else 0))

    def keep(self, slot: Slot, variant: str, html: str, *, stale: Callable[[str, str], bool] | None = None) -> None:
        """Keep a filler's HTML for one slot and variant with the page, counted against the cache's bound; the
        slot's variants `stale(old, variant)` says are out of date go."""
        by_variant = self.variants.setdefault(slot, {})
        added = len(html) - len(by_variant.get(variant, ""))
        if stale is not None:
            for old in [old for old in by_variant if old != variant and stale(old, variant)]:
                added -= len(by_variant.pop(old))
        by_variant[variant] = html
        self.size += added
        if self._owner is not None:
            self._owner._grew(self, added)


@dataclass(slots=True, frozen=True)
class _Assembly:
    """A page put together for one person: the bytes to join, in order, the CSRF token going at `token_at`; and
    the pieces' digests for the ETag. Valid while the fillers fill the page's slots with the same HTML (`filled`)."""

    filled: list[list[str]]
    chunks: list[bytes]
    token_at: list[int]
    tags: str

    def size(self) -> int:
        return FILLED_CHARACTERS + 8 * (len(self.chunks) + len(self.token_at))

    def body(self, token: bytes) -> bytes:
        if not self.token_at:
            return b"".join(self.chunks)
        chunks = self.chunks.copy()
        for i in self.token_at:
            chunks[i] = token
        return b"".join(chunks)


@dataclass(slots=True)
class Filling:
    """What a filler gets for one request of one kept page."""

    request: Request
    viewer: Viewer
    page: Page
    # The request's session, or (before the stack) one opened on first use: a page whose parts are all known
    # costs no session at all.
    open_session: Callable[[], Session]
    csrf: Markup = CSRF_MARKER  # put this where the token goes: the whole page is filled in one pass
    on_response: list[Callable[[Response], None]] = field(default_factory=list)
    # The votes revision when it was read before any session (the signed-in fast path): fillers use it rather than
    # ask the session for it.
    votes_revision: int | None = None
    opened: Session | None = None
    # Before the stack: one read-only statement's rows, outside any transaction (`Database.read_rows`), for fillers
    # that need a plain read rather than the session (None: they use the session)
    read_rows: Callable[[str], list[Any]] | None = None

    @property
    def session(self) -> Session:
        if self.opened is None:
            self.opened = self.open_session()
        return self.opened

    def value(self, slot: Slot) -> Any:
        return self.page.values[slot]

    def variants(self, slots: Sequence[Slot], variants: Sequence[str], make: Callable[[Slot, str], str], *,
                 stale: Callable[[str, str], bool] | None = None) -> list[str]:
        """The HTML kept for each slot in its variant, made by `make(slot, variant)` (and kept with the page)
        on first use; then the slot's variants `stale(old, variant)` says are out of date are dropped."""
        page = self.page
        kept = page.variants
        out = []
        for slot, variant in zip(slots, variants, strict=True):
            by_variant = kept.get(slot)
            html = by_variant.get(variant) if by_variant is not None else None
            if html is None:
                html = make(slot, variant)
                page.keep(slot, variant, html, stale=stale)
            out.append(html)
        return out


class _Account:
    """The header's account corner of a signed-in person.

    It shows the name and whether the link goes to the staff or the customer settings, with the token's marker:
    rendered once per (name, staff or not) and kept, so a signed-in page costs no template per request."""

    MAX_KEPT = 10_000

    def __init__(self) -> None:
        self._kept: dict[tuple[str, bool], str] = {}

    def capture(self, value: Any) -> tuple[str, Any]:
        return "", None

    def fill(self, filling: Filling, slots: Sequence[Slot]) -> Sequence[str]:
        viewer = filling.viewer
        key = (viewer.user.name if viewer.user is not None else "", viewer.is_staff)
        html = self._kept.get(key) if viewer.user is not None else None
        if html is None:
            html = templates.env.get_template("_account.html").render(
                request=filling.request, viewer=viewer, csrf_token=filling.csrf)
            if viewer.user is not None:
                if len(self._kept) >= self.MAX_KEPT:
                    self._kept.clear()
                self._kept[key] = html
        return [html] * len(slots)


class _Flashes:
    """The one-time messages a redirect left in the flash cookie (which the answer then clears)."""

    def capture(self, value: Any) -> tuple[str, Any]:
        return "", None

    def fill(self, filling: Filling, slots: Sequence[Slot]) -> Sequence[str]:
        request = filling.request
        flashes = read_flashes(request)
        if flashes or flash_cookie_sent(request):  # one that does not verify is cleared too (`web.flash_cookie_sent`)
            filling.on_response.append(lambda response: clear_flash_cookie(request, response))
        if not flashes:
            return [""] * len(slots)
        return [templates.env.get_template("_flashes.html").render(flashes=flashes)] * len(slots)


class PageCache:
    """One worker's pages for the current revision, the least recently used dropped beyond a size."""

    def __init__(self, max_characters: int = MAX_CHARACTERS) -> None:
        self.max_characters = max_characters
        self.fillers: dict[str, Filler] = {"account": _Account(), "flashes": _Flashes()}
        self._revision: int | None = None
        self._pages: OrderedDict[tuple[Any, ...], Page] = OrderedDict()
        # (path, query string) -> the page whose finished answer is kept for it (KeptPagesMiddleware)
        self._finished: dict[tuple[str, bytes], Page] = {}
        # (path, query string, audience) -> the page a signed-in person of that audience is answered from there
        self._signed_in: dict[tuple[str, bytes, Any], Page] = {}
        self._pieces: dict[str, tuple[bytes, str, list[bytes] | None]] = {}  # filled piece -> piece()
        self._characters = 0
        # Shares of the bound for pages anyone can make up (a search per query): their own least recently used go
        # first, so they cannot crowd out the boards. Group -> (its bound, its pages' keys oldest first, characters).
        self._groups: dict[str, tuple[int, OrderedDict[tuple[Any, ...], None], list[int]]] = {}
        # Per group, the addresses asked for lately (`admits`), oldest first.
        self._sighted: dict[str, OrderedDict[tuple[Any, ...], None]] = {}
        self.unadmitted = 0  # pages of a bounded group rendered and not kept: their address was new
        self.hits = self.misses = 0
        self.finished_hits = 0
        self.signed_in_hits = 0
        self.refills = 0  # finished answers filled again under a new votes revision before the stack
        # (content revision, key) -> the page being made in a thread for it (`cached_render_off_loop`), awaited by
        # the requests for the same page meanwhile instead of each making it again
        self.in_flight: dict[tuple[Any, ...], asyncio.Future[Page | None]] = {}
        # The pages being made again for their new minute apart from any request (`_stale`), awaited at shutdown
        self.refreshing: set[asyncio.Task[None]] = set()
        self.refreshes = 0  # pages made again that way and kept
        self._refresh_slot: asyncio.Semaphore | None = None
        # When a kept page changes by time alone (a scheduled changelog entry published: `changes_at`), as time.time()
        self._due: float | None = None

    def changes_at(self, moment: datetime | None) -> None:
        """A page being made shows something that changes at `moment` without any write (a scheduled publication):
        from then on no page kept now is answered (all are dropped, as at a new content revision). None: nothing."""
        if moment is not None:
            due = (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).timestamp()  # the app's UTC
            self._due = due if self._due is None else min(self._due, due)

    def _expire_if_due(self) -> None:
        if self._due is not None and time.time() >= self._due:
            self.clear()

    def refresh_slot(self) -> asyncio.Semaphore:
        """What a page made again apart from any request holds while it is made (`_refresh`): one at a time per worker.
        After a quiet minute a worker has dozens to make; several threads making them at once took the interpreter's
        lock from the event loop most of the time, and the visitors answered meanwhile waited for it."""
        if self._refresh_slot is None:
            self._refresh_slot = asyncio.Semaphore(1)
        return self._refresh_slot

    async def drain(self) -> None:
        """Wait for the pages being made again apart from any request (at shutdown, before the database goes)."""
        while pending := {task for task in self.refreshing if not task.done()}:
            await asyncio.wait(pending)

    def register(self, kind: str, filler: Filler) -> None:
        """Fill the slots a template opens with `slot(kind, value)` by `filler`."""
        if not re.fullmatch(r"\w+", kind) or kind in self.fillers:
            raise ValueError(f"slot kind {kind!r} is taken or not a word")
        self.fillers[kind] = filler

    def bound(self, group: str, max_characters: int) -> None:
        """Let the pages put in `group` count for at most `max_characters` together (and the whole bound as usual).
        A page of the group is kept from the second time its address is asked for (`admits`)."""
        self._groups[group] = (max_characters, OrderedDict(), [0])
        self._sighted[group] = OrderedDict()

    def admits(self, group: str, key: tuple[Any, ...]) -> bool:
        """Whether a page of a bounded group may be kept: only once its address was asked for before (by anyone of
        the same audience), so that queries asked once, most of them, cost no keeping and push out nothing. The
        addresses seen are remembered apart from the revisions (what is asked for, not what it shows), the
        `SIGHTED_KEYS` latest per group."""
        sighted = self._sighted[group]
        address = key[:4]  # template, path, query, audience: not the revisions or the minute
        if address in sighted:
            sighted.move_to_end(address)
            return True
        sighted[address] = None
        if len(sighted) > SIGHTED_KEYS:
            sighted.popitem(last=False)
        self.unadmitted += 1
        return False

    def group_characters(self, group: str) -> int:
        """What the pages of a bounded group count for now."""
        return self._groups[group][2][0]

    @property
    def characters(self) -> int:
        """What the kept pages count for against `max_characters`."""
        return self._characters

    def get(self, rev: int, key: tuple[Any, ...]) -> Page | None:
        self._expire_if_due()
        if rev != self._revision:
            self.clear()
            self._revision = rev
        page = self._pages.get(key)
        if page is None:
            self.misses += 1
            return None
        self._pages.move_to_end(key)
        if page.group is not None:
            self._groups[page.group][1].move_to_end(key)
        self.hits += 1
        return page

    def peek(self, rev: int, key: tuple[Any, ...]) -> Page | None:
        """The page kept under `key` and content revision `rev`, if any, not counted as a hit or a miss."""
        self._expire_if_due()
        return self._pages.get(key) if rev == self._revision else None

    def finished(self, rev: int, votes: int, path: str, query: bytes
                 ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """The finished answer kept for this address under content revision `rev` and votes revision `votes`,
        this minute, or in one of the last `STALE_MINUTES` while the page is being made for this one (as the app
        answers it meanwhile: `_stale`); None if there is none."""
        self._expire_if_due()
        page = self._finished.get((path, query))
        if page is None or rev != self._revision or page.finished_votes != votes or page._key is None:
            return None
        now = _minute(page._key[1])
        if page._key[-1] != now and not (now - page._key[-1] <= STALE_MINUTES
                                         and (rev, (*page._key[:-1], now)) in self.in_flight):
            return None
        if self._pages.get(page._key) is not page or page.finished is None:
            return None
        self._pages.move_to_end(page._key)
        self.hits += 1
        self.finished_hits += 1
        return page.finished

    def refillable(self, rev: int, votes: int, path: str, query: bytes) -> Page | None:
        """The page whose finished answer is kept for this address under content revision `rev`, this minute, but
        under a votes revision other than `votes`, when only its vote slots follow the counts (its layout does not:
        not kept under the votes revision): its answer can be filled again without the app. None otherwise."""
        self._expire_if_due()
        page = self._finished.get((path, query))
        if (page is None or rev != self._revision or page.finished is None or page.finished_votes == votes
                or page._key is None or page._key[4] is not None or page._key[-1] != _minute(page._key[1])):
            return None
        if self._pages.get(page._key) is not page:
            return None
        return page

    def signed_in_page(self, rev: int, votes: int, path: str, query: bytes, who: Any) -> Page | None:
        """The page kept for a signed-in person of audience `who` at this address, if it is still the one kept
        under content revision `rev`, this minute, and (for a page whose layout follows the counts) under votes
        revision `votes`; None otherwise."""
        self._expire_if_due()
        page = self._signed_in.get((path, query, who))
        if page is None or rev != self._revision or page._key is None or page._key[-1] != _minute(page._key[1]):
            return None
        if page._key[4] is not None and page._key[4] != votes:
            return None
        if self._pages.get(page._key) is not page or page.signed_in_headers is None:
            return None
        self._pages.move_to_end(page._key)
        self.hits += 1
        self.signed_in_hits += 1
        return page

    def piece(self, html: str) -> tuple[bytes, str, list[bytes] | None]:
        """One filled piece of a page encoded, its digest (for the ETag) and, when it holds the CSRF token's marker,
        the piece cut at each marker; kept until the revision changes: fillers hand out the same kept strings
        again and again."""
        known = self._pieces.get(html)
        if known is None:
            if len(self._pieces) >= MAX_PIECES:
                self._pieces.clear()
            data = html.encode()
            # The digest leaves the markers' random nonce out, as `page_digest` does: the same piece gets the same tag
            # in every worker and instance (a customer's vote forms hold the token's marker).
            known = self._pieces[html] = (
                data, hashlib.blake2b(html.replace(_NONCE, "").encode(), digest_size=12).hexdigest(),
                data.split(_CSRF_BYTES) if _CSRF_BYTES in data else None)
        return known

    def might_have_signed_in(self) -> bool:
        """Whether any page may be answered to a signed-in person before the stack (cheap)."""
        return bool(self._signed_in)

    def keep_signed_in(self, rev: int, key: tuple[Any, ...], path: str, query: bytes, who: Any,
                       headers: list[tuple[bytes, bytes]]) -> None:
        """Answer signed-in people of audience `who` at this address from the page kept under `key` (still kept
        under `rev`), with the headers the app sent with it."""
        page = self._pages.get(key)
        if page is None or rev != self._revision:
            return
        page.signed_in_headers = headers
        _index_address(self._signed_in, page._signed_in_addresses, (path, query, who), (key[1], key[2].encode(), who),
                       page)

    def might_have(self, path: str, query: bytes) -> bool:
        """Whether a finished answer may be kept for this address (no revision read yet: cheap)."""
        return (path, query) in self._finished

    def keep_finished(self, rev: int, votes: int, key: tuple[Any, ...], path: str, query: bytes, status: int,
                      headers: list[tuple[bytes, bytes]], body: bytes) -> None:
        """Keep a visitor's finished answer with its page (still kept under `rev`), as it is under
        votes revision `votes` (it replaces one kept under another)."""
        page = self._pages.get(key)
        if page is None or rev != self._revision:
            return
        added = len(body) - (len(page.finished[2]) if page.finished is not None else 0)
        page.finished = (status, headers, body)
        page.finished_votes = votes
        _index_address(self._finished, page._addresses, (path, query), (key[1], key[2].encode()), page)
        page.size += added
        self._grew(page, added)

    def put(self, rev: int, key: tuple[Any, ...], page: Page) -> None:
        size = page.measure()
        if rev != self._revision or size > self.max_characters or (
                page.group is not None and size > self._groups[page.group][0]):
            return
        old = self._pages.pop(key, None)
        if old is not None:
            self._characters -= old.size
            self._forget(old)
        page._owner, page._key = self, key
        self._pages[key] = page
        self._characters += size
        if page.group is not None:
            _, keys, characters = self._groups[page.group]
            keys[key] = None
            characters[0] += size
        self._drop_beyond_bound(page.group)

    def _grew(self, page: Page, added: int) -> None:
        if page._key is not None and self._pages.get(page._key) is page:
            self._characters += added
            if page.group is not None:
                self._groups[page.group][2][0] += added
            self._drop_beyond_bound(page.group)

    def _drop_beyond_bound(self, group: str | None = None) -> None:
        if group is not None:
            bound, keys, characters = self._groups[group]
            while characters[0] > bound and keys:
                dropped = self._pages.pop(next(iter(keys)))
                self._characters -= dropped.size
                self._forget(dropped)
        while self._characters > self.max_characters and self._pages:
            _, dropped = self._pages.popitem(last=False)
            self._characters -= dropped.size
            self._forget(dropped)

    def _forget(self, page: Page) -> None:
        page._owner = None
        for kept_at in page._addresses:
            if self._finished.get(kept_at) is page:
                del self._finished[kept_at]
        if page.group is not None and page._key is not None:
            _, keys, characters = self._groups[page.group]
            if page._key in keys:
                del keys[page._key]
                characters[0] -= page.size
        for address in page._signed_in_addresses:
            if self._signed_in.get(address) is page:
                del self._signed_in[address]

    def entries(self) -> list[tuple[tuple[Any, ...], Page]]:
        """The kept pages with their keys, the least recently used first (the next to go)."""
        return list(self._pages.items())

    def __len__(self) -> int:
        return len(self._pages)

    def clear(self) -> None:
        self._due = None  # the pages made from now on say when they change again
        for page in self._pages.values():
            page._owner = None
        self._pages.clear()
        self._finished.clear()
        self._signed_in.clear()
        self._pieces.clear()
        self._characters = 0
        for _, keys, characters in self._groups.values():
            keys.clear()
            characters[0] = 0


# Addresses a kept page is answered at before the stack besides its own: links with parameters it does not read (a
# campaign's, a launch site's `?ref=`) are answered from it, but made-up ones (`/?x=1`, `/?x=2`, …), each answered
# once by the app, must not each stay an address of the page until the next change: a worker's memory would grow
# with every one.
MAX_OTHER_ADDRESSES = 8

_Address = TypeVar("_Address", bound=tuple[Any, ...])


def _index_address(index: dict[_Address, Page], addresses: list[_Address], address: _Address, own: _Address,
                   page: Page) -> None:
    """Answer `page` at `address` (in `index`, listed in the page's `addresses`): its own address always, at most
    `MAX_OTHER_ADDRESSES` others, the one kept longest going first."""
    if address in addresses:
        addresses.remove(address)
    elif address != own and sum(1 for kept_at in addresses if kept_at != own) >= MAX_OTHER_ADDRESSES:
        oldest = next(kept_at for kept_at in addresses if kept_at != own)
        addresses.remove(oldest)
        if index.get(oldest) is page:
            del index[oldest]
    addresses.append(address)
    index[address] = page


def _minute(path: str = "") -> int:
    """The minute a page of this path is kept for (cards say "updated 3 minutes ago": each minute it is rendered
    again). Each path's minute starts at a second of its own, from its text, so that a worker's kept pages (the
    board's 48 item pages) are not all rendered again in the same second, holding the worker for the sum of their
    renders while its other requests wait; a page's relative times are still never more than a minute old."""
    return int((time.time() + _offset(path)) // 60)


def _offset(path: str) -> int:
    return zlib.crc32(path.encode()) % 60


def _minute_began(path: str, minute: int) -> datetime:
    """When `minute` (`_minute(path)`) began for a page of this path: what the page says "3 minutes ago" from."""
    return datetime.fromtimestamp(minute * 60 - _offset(path), UTC)


# What a page is made from: `build(session)` reads what it shows with `session` (the request's, or for a visitor's page
# made again apart from any request, one of its own: `_stale`) and gives its template's context, or a response to send
# instead (a redirect).
Build = Callable[[Session], dict[str, Any] | Response]


def cached_render(request: Request, session: Session, viewer: Viewer, template: str, build: Build, *,
                  params: frozenset[str] = frozenset(), signed_in_too: bool = True, counts_in_layout: bool = False,
                  group: str | None = None, media_type: str = HTML) -> Response:
    """`render(request, template, build(session))`, from this worker's cache when it may be.

    `build` runs only on a miss; it may return a response instead of a context (a redirect), which is
    sent as it is and not cached. It reads with the session it is given, never another: a visitor's page whose minute
    turned is made again with a session of its own after the visitor was answered the page kept before (`_stale`).
    `params` are the query parameters the page reads: an address with others too
    (a campaign's `utm_source`, a click id, a made-up one) is answered the page of the address without them, kept
    under that address and made as for it (its sign-in link comes back there): such links cost what the plain
    address costs, and made-up addresses cannot crowd out the real pages.
    `signed_in_too=False` caches the page for signed-out visitors only (the item page, whose comment
    and follow forms are per person throughout). `counts_in_layout`: the page shows vote counts other than in
    its vote slots (a board sorted by votes, the item page's vote box): it is kept under the votes revision too.
    `group`: a share of the cache bounded on its own (`PageCache.bound`), for pages whose addresses anyone can make
    up in any number (a search per query): they push out each other, never the boards, and are kept only from the
    second time their address is asked for (`PageCache.admits`). `media_type`: what the template makes, for a page
    that is not HTML (a feed, the sitemap).
    """
    plan = _plan(request, session, viewer, template, params=params, signed_in_too=signed_in_too,
                 counts_in_layout=counts_in_layout, group=group, media_type=media_type)
    if plan is None:
        return _rendered(request, session, template, build, media_type)
    if plan.page is None and (earlier := _stale(plan, viewer, template, build)) is not None:
        return _respond(plan.cache, plan.request, session, viewer, earlier, plan.rev, plan.votes, plan.key, keep=False)
    return _answer(plan, session, viewer,
                   plan.page if plan.page is not None else _made(plan, session, viewer, template, build))


async def cached_render_off_loop(request: Request, session: Session, viewer: Viewer, template: str, build: Build, *,
                                 params: frozenset[str] = frozenset(), signed_in_too: bool = True,
                                 counts_in_layout: bool = False, group: str | None = None,
                                 media_type: str = HTML) -> Response:
    """`cached_render` for a page whose `build` is slow (a search, an item page, the sitemap): `build`, and the render
    of what it gives, run in a thread when the request holds an off-loop slot (app.db.run_off_loop). The cache is
    looked up, filled and answered from here, on the event loop, which alone touches it (it is not thread-safe)."""
    plan = _plan(request, session, viewer, template, params=params, signed_in_too=signed_in_too,
                 counts_in_layout=counts_in_layout, group=group, media_type=media_type)
    if plan is None:
        return await run_off_loop(request, lambda: _rendered(request, session, template, build, media_type))
    kept: _Plan = plan  # (for the closure: not None)
    if kept.page is not None:
        return _answer(kept, session, viewer, kept.page)
    earlier = _stale(kept, viewer, template, build)
    if earlier is not None:
        return _respond(kept.cache, kept.request, session, viewer, earlier, kept.rev, kept.votes, kept.key, keep=False)

    def make() -> Awaitable[Page | Response]:
        return run_off_loop(request, lambda: _made(kept, session, viewer, template, build))

    made = await (_made_once(kept, make) if kept.admitted else make())
    return _answer(kept, session, viewer, made)


def _stale(plan: _Plan, viewer: Viewer, template: str, build: Build) -> Page | None:
    """The page kept for one of the last `STALE_MINUTES` minutes under the same revisions (content, and votes for a
    page that shows counts), to answer rather than wait for the page of this minute: while it is being made (by another
    request, or apart from any), and, for a visitor, when this worker is making other pages already — a burst after a
    quiet spell, when every kept page's minute had turned and the first visitors each waited for the renders of all of
    them (the item pages' p99 0.2-0.8 s, bench/README.md) —, the page then queued to be made apart (`_refresh`). None
    otherwise: the request makes the page and waits for it, so a lone visitor (a quiet portal's every visitor) gets
    this minute's, relative times included. A signed-in person's page is made by their
    own request (their viewer is their request's)."""
    if not plan.admitted:
        return None
    earlier = next((page for back in range(1, STALE_MINUTES + 1)
                    if (page := plan.cache.peek(plan.rev, (*plan.key[:-1], plan.key[-1] - back))) is not None), None)
    if earlier is None:
        return None
    flights = plan.cache.in_flight
    if (plan.rev, plan.key) in flights or (flights and viewer.user is None and _refresh(plan, viewer, template, build)):
        return earlier
    return None


def _refresh(plan: _Plan, viewer: Viewer, template: str, build: Build) -> bool:
    """Make the page of `plan` for its minute apart from the request that asked (in a thread, with a read session of
    its own, holding an off-loop slot as a request would: app.db.OffLoopMiddleware), kept when done if the revisions
    are still those of `plan`; the requests for it meanwhile are answered the page kept before (`_stale`). False when
    it cannot be: the app's sessions share one connection (the tests' transaction), which a thread must not use
    beside the requests."""
    database: Database | None = getattr(plan.request.app.state, "database", None)
    if database is None or database.read_sessions.kw.get("bind") is not database.engine:
        return False
    cache, flight = plan.cache, (plan.rev, plan.key)
    future: asyncio.Future[Page | None] = asyncio.get_running_loop().create_future()
    cache.in_flight[flight] = future

    async def refresh() -> None:
        made: Page | Response | None = None
        try:
            async with cache.refresh_slot(), database.off_loop_slots():
                try:
                    made = await asyncio.to_thread(_made_apart, plan, database, viewer, template, build)
                except DBAPIError as error:
                    if not error.connection_invalidated:
                        raise
                    # A pooled connection found dead (the database restarted): dropped from the pool; once more on
                    # another, as a request would be run again
                    made = await asyncio.to_thread(_made_apart, plan, database, viewer, template, build)
            if isinstance(made, Page):
                cache.put(plan.rev, plan.key, made)  # not kept if the content changed meanwhile (a new revision)
                cache.refreshes += 1
                metrics.PAGE_REFRESHES.labels("made").inc()
            else:
                metrics.PAGE_REFRESHES.labels("dropped").inc()
        except Exception:  # the next request makes it, or answers the error
            metrics.PAGE_REFRESHES.labels("failed").inc()
            log.warning("a kept page could not be made again for its new minute (%s)", plan.request.url.path,
                        exc_info=True)
        finally:
            del cache.in_flight[flight]
            future.set_result(made if isinstance(made, Page) else None)

    task = asyncio.get_running_loop().create_task(refresh(), name=f"page refresh {plan.request.url.path}")
    cache.refreshing.add(task)
    task.add_done_callback(cache.refreshing.discard)
    return True


def _made_apart(plan: _Plan, database: Database, viewer: Viewer, template: str, build: Build) -> Page | Response | None:
    """`_made` with a read session of its own (in a thread: `_refresh`), the request as the page reads it (its address)
    with that session in its state; None when the revisions read now are not the plan's (the page would be made from
    other content: the next request makes its own)."""
    db = RequestSession(database, write=False)
    session = db.session
    try:
        rev, votes = revision.both(session)
        if rev != plan.rev or (plan.key[4] is not None and votes != plan.key[4]):
            return None
        request = Request({**plan.request.scope, "state": {"db": db}}, plan.request.receive)
        return _made(_Plan(plan.cache, request, plan.rev, plan.votes, plan.key, None, plan.admitted, plan.group,
                           plan.media_type), session, viewer, template, build)
    finally:
        session.close()


async def _made_once(plan: _Plan, make: Callable[[], Awaitable[Page | Response]]) -> Page | Response:
    """`make()`, or the page another request is making for the same key under the same content revision (a popular
    item page in its next minute: made once, however many ask meanwhile, as on the event loop it was). Only a page
    is shared, never a response (a redirect, or an error): each of those waiting then makes its own."""
    flights = plan.cache.in_flight
    flight = (plan.rev, plan.key)
    pending = flights.get(flight)
    if pending is not None:
        page = await asyncio.shield(pending)
        if page is not None:
            plan.page = page  # kept by the one who made it: answered from it, not put again
            return page
        return await make()
    future: asyncio.Future[Page | None] = asyncio.get_running_loop().create_future()
    flights[flight] = future
    made: Page | Response | None = None
    try:
        made = await make()
        return made
    finally:
        del flights[flight]
        future.set_result(made if isinstance(made, Page) else None)


def _rendered(request: Request, session: Session, template: str, build: Build, media_type: str = HTML) -> Response:
    """A page not cached for this request: built and rendered, or what `build` answered instead."""
    context = build(session)
    if isinstance(context, Response):
        return context
    response = render(request, template, context)
    if media_type != HTML:
        response.headers["content-type"] = media_type
    return response


@dataclass(slots=True)
class _Plan:
    """Where a cached page is looked for: the cache, the request as the page reads it, the revisions, the key, the
    page if kept, and whether a page made now is to be kept (`PageCache.admits`)."""

    cache: PageCache
    request: Request
    rev: int
    votes: int
    key: tuple[Any, ...]
    page: Page | None
    admitted: bool
    group: str | None
    media_type: str


def _plan(request: Request, session: Session, viewer: Viewer, template: str, *, params: frozenset[str],
          signed_in_too: bool, counts_in_layout: bool, group: str | None, media_type: str) -> _Plan | None:
    """None when the page is not cached for this request (no cache, staff, a write, a signed-in person on a page kept
    for visitors only)."""
    who = audience(viewer)
    cache: PageCache | None = getattr(request.app.state, "pages", None)
    if (cache is None or who is None or request.state.db.is_write
            or (viewer.user is not None and not signed_in_too)):
        return None
    if any(name not in params for name in request.query_params):
        request = _without_other_params(request, params)
    rev, votes = revision.both(session)
    # The minute last: a finished answer is checked against it (PageCache.finished).
    path = request.url.path
    key = (template, path, request.url.query, who, votes if counts_in_layout else None, _minute(path))
    page = cache.get(rev, key)
    # Asked for the first time, a page of a group is rendered, not kept
    admitted = page is not None or group is None or cache.admits(group, key)
    return _Plan(cache, request, rev, votes, key, page, admitted, group, media_type)


def _made(plan: _Plan, session: Session, viewer: Viewer, template: str, build: Build) -> Page | Response:
    """The page built and rendered as for keeping, or the response to send as it is (a redirect `build` gave). A
    page not admitted (`_Plan.admitted`) is made the same way and answered, not kept: its ETag is then the one the
    kept page will have (a search's first answer had a tag of its own, so a browser holding it got 200s once the
    page was kept, and two workers gave two tags for the same bytes). Touches nothing of the cache: it may run in a
    thread."""
    context = build(session)
    if isinstance(context, Response):
        return context
    page = _capture(plan.cache, plan.request, viewer, template, context,
                    began=_minute_began(plan.request.url.path, plan.key[-1]))
    page.group, page.media_type = plan.group, plan.media_type
    return page


def _answer(plan: _Plan, session: Session, viewer: Viewer, made: Page | Response) -> Response:
    if isinstance(made, Response):
        return made
    if not plan.admitted:  # answered, not kept, nor its finished answer
        return _respond(plan.cache, plan.request, session, viewer, made, plan.rev, plan.votes, plan.key, keep=False)
    if plan.page is None:
        plan.cache.put(plan.rev, plan.key, made)
        plan.page = made
    return _respond(plan.cache, plan.request, session, viewer, made, plan.rev, plan.votes, plan.key)


def _without_other_params(request: Request, params: frozenset[str]) -> Request:
    """The request as if for its address without the query parameters the page does not read (each kept one as it
    was sent), as `_at_address` makes it."""
    return _at_address(request, _query_keeping(request.scope["query_string"],
                                              lambda name: unquote_plus(name.decode("latin-1")) in params))


def canonical_query(pairs: Iterable[tuple[str, str | None]]) -> str:
    """The query string holding only these parameters (those with a value), in this order."""
    return urlencode([(name, value) for name, value in pairs if value])


def canonical_address(path: str, pairs: Iterable[tuple[str, str | None]]) -> str:
    """`path` with `canonical_query(pairs)`: where a redirect to a page's one address leads."""
    query = canonical_query(pairs)
    return f"{path}?{query}" if query else path


def at_canonical(request: Request, pairs: Iterable[tuple[str, str | None]]) -> Request:
    """The request as if for the one address that says what its page shows (`canonical_query(pairs)`), for the page to
    be made and kept as for that address: made-up spellings, repeated or reordered parameters and values past the
    end cost what that address costs, and cannot each be a page kept (a walk-through's thousands pushed the board out
    of the cache)."""
    query = canonical_query(pairs).encode("ascii")
    return request if request.scope["query_string"] == query else _at_address(request, query)


def _at_address(request: Request, query: bytes) -> Request:
    """The request as if for its path with this query string, for a page to be made and kept as for that address.
    Its answer, the page of that address, may still be answered finished before the stack at the address it was asked
    at (`FINISHING` kept): a launch site's `?ref=` link then costs what the page's own address costs after its first
    visit, and made-up addresses are a few at most per page (`MAX_OTHER_ADDRESSES`)."""
    scope = dict(request.scope)
    scope["query_string"] = query
    return Request(scope, request.receive)


def _query_keeping(query: bytes, keep: Callable[[bytes], bool]) -> bytes:
    """The query string with only the parameters whose name (as sent) `keep` says yes to, each as it was sent."""
    parts = query.split(b"&")
    kept = [part for part in parts if keep(part.split(b"=", 1)[0])]
    return query if len(kept) == len(parts) else b"&".join(kept)


def _capture(cache: PageCache, request: Request, viewer: Viewer, template: str, context: dict[str, Any], *,
             began: datetime) -> Page:
    page = Page(parts=[])
    fillers = cache.fillers

    def slot(kind: str, value: Any = None) -> Markup:
        """An open part of the page: its filler keeps what it needs of `value` and fills it per request."""
        arg, kept = fillers[kind].capture(value)
        page.values.setdefault(Slot(kind, arg), kept)
        return Markup(f"{_PREFIX}{kind}:{arg}\x00")  # nosec B704 # kind is a registered word, arg the filler's id

    ctx = {**page_context(request, context, csrf=CSRF_MARKER, flashes=[]), "request": request, "viewer": viewer,
           "slot": slot, "account_slot": viewer.user is not None}
    pinned = rendered_at.set(began)  # the same bytes from every worker this minute
    try:
        html = templates.env.get_template(template).render(ctx)
    finally:
        rendered_at.reset(pinned)
    pieces = _MARKER.split(html)
    where: dict[Slot, list[int]] = {}
    for i in range(0, len(pieces), 3):
        if pieces[i]:
            page.parts.append(pieces[i])
        if i + 2 < len(pieces):
            opened = Slot(pieces[i + 1], pieces[i + 2])
            where.setdefault(opened, []).append(len(page.parts))
            page.parts.append(opened)
    for opened, positions in where.items():
        slots, places = page.open.setdefault(opened.kind, ([], []))
        slots.append(opened)
        places.append(positions)
    page.digest = page_digest(page.parts)
    return page


def page_digest(parts: list[str | Slot]) -> str:
    """The base of a page's ETags: its text and where its slots are, the same in every worker and instance (the
    markers' random nonce left out), so a client revalidating with one worker's tag gets its 304 from any other
    serving the same bytes."""
    return weak_etag(*(p.replace(_NONCE, "") if isinstance(p, str) else f"\x00slot:{p.kind}:{p.arg}\x00"
                       for p in parts))


def _respond(cache: PageCache, request: Request, session: Session, viewer: Viewer, page: Page, rev: int,
             votes: int, key: tuple[Any, ...], *, keep: bool = True) -> Response:
    """The page filled for this request; `keep`: its finished answer may be kept for the next (a kept page's)."""
    filling = Filling(request=request, viewer=viewer, page=page, open_session=lambda: session)
    body, etag, needs_token = _assemble(cache, filling)
    response = Response(body, media_type=page.media_type, headers={"etag": etag})
    for hook in filling.on_response:
        hook(response)
    finishing: _Finishing | None = request.scope.get(FINISHING)
    if keep and finishing is not None and not filling.on_response:
        if viewer.user is None and not needs_token:
            finishing.kept = (cache, rev, votes, key)
        elif viewer.user is not None:
            finishing.signed_in = (cache, rev, key, key[3])
    return response


def _assemble(cache: PageCache, filling: Filling) -> tuple[bytes, str, bool]:
    """The page with its slots filled for this request: (body, ETag, whether it holds a CSRF token). The app and
    the signed-in fast path both answer with it, so their bytes cannot differ. Built from bytes: the page's text
    and each filled piece are encoded once and kept (`Page.encoded`, `PageCache.piece`); and how they go together
    is kept per person while the fillers fill the slots with the same HTML (a customer's board again: their token
    put in, nothing else done)."""
    page = filling.page
    fillers = cache.fillers
    filled = [list(fillers[kind].fill(filling, slots)) for kind, (slots, _) in page.open.items()]
    user = filling.viewer.user
    viewer_id = user.id if user is not None else None
    assembly = page.assembled(viewer_id, filled)
    if assembly is None:
        assembly = _assembly(cache, page, filled)
        page.keep_assembled(viewer_id, assembly)
    # A page without a form that needs it (a visitor's board) mints no CSRF cookie and computes no token. Where
    # the token goes is known from the kept parts and pieces (each cut at its markers once): no search per answer.
    needs_token = bool(assembly.token_at)
    token, masked = csrf_tokens(filling.request) if needs_token else ("", "")
    # The ETag: the page's digest, made once, and what this answer filled in (each piece by its digest, the token
    # included), so it changes whenever the bytes this person gets do, without hashing the page per request. The
    # bare token, not this answer's mask of it: a page kept by the browser holds a mask as good as any other.
    return assembly.body(masked.encode()), weak_etag(page.digest, assembly.tags, token), needs_token


def _assembly(cache: PageCache, page: Page, filled: list[list[str]]) -> _Assembly:
    """The page's parts with these filled pieces in their places, cut where the CSRF token goes."""
    out: list[bytes | list[bytes]] = list(page.encoded())
    tags: list[str] = []
    for (_, places), pieces in zip(page.open.values(), filled, strict=True):
        for positions, html in zip(places, pieces, strict=True):
            data, tag, cut = cache.piece(html)
            tags.append(tag)
            for i in positions:
                out[i] = cut if cut is not None else data
    for i, cut in page.marked():
        out[i] = cut
    chunks: list[bytes] = []
    token_at: list[int] = []
    for part in out:
        if isinstance(part, bytes):
            chunks.append(part)
            continue
        for n, between in enumerate(part):
            if n:
                token_at.append(len(chunks))
                chunks.append(b"")
            chunks.append(between)
    return _Assembly(filled=filled, chunks=chunks, token_at=token_at, tags="".join(tags))


# --- finished pages, before the stack -------------------------------------------------------------------

FINISHING = "ahead.finishing"  # in the scope: where `_respond` says the answer may be kept as it goes out
# What a visitor's request may carry and still be answered from a finished page: nothing that identifies them (a
# cookie header is read first: cookies the app never reads pass), nothing that asks for something other than the
# whole page.
_PERSONAL_HEADERS = frozenset({b"cookie", b"authorization", b"if-none-match", b"if-modified-since", b"range",
                               b"if-match", b"if-unmodified-since", b"if-range"})
_DROPPED_HEADERS = frozenset({b"date", b"server"})  # the server's own, per answer


@dataclass(slots=True)
class _Finishing:
    kept: tuple[PageCache, int, int, tuple[Any, ...]] | None = None
    # A signed-in person's page: (cache, content revision, key, audience) it was answered from
    signed_in: tuple[PageCache, int, tuple[Any, ...], Any] | None = None


# Query parameters that only say where a visitor came from (campaigns, ad and newsletter click ids): no page reads them.
_TRACKING = frozenset({b"fbclid", b"gclid", b"dclid", b"gbraid", b"wbraid", b"msclkid", b"yclid", b"igshid",
                       b"mc_cid", b"mc_eid", b"_hsenc", b"_hsmi"})


def _untracked(query: bytes) -> bytes:
    """The query string without tracking parameters (`utm_*` and `_TRACKING`), the others as they were sent."""
    return _query_keeping(query, lambda name: not _tracking(name.lower())) if query else query


def _tracking(name: bytes) -> bool:
    return name.startswith(b"utm_") or name in _TRACKING


# (content revision, votes revision, viewer or None) for a session cookie's value, read before the stack: at once,
# or awaitable (PostgreSQL's single-flight read, app/deps.py SignedInViewers.read_after)
SignedInReader = Callable[[Any, str], tuple[int, int, Viewer | None] | Awaitable[tuple[int, int, Viewer | None]]]


class KeptPagesMiddleware:
    """Answers kept pages before the app: a visitor's GET from the finished page kept for its address (a visitor: no
    flash message, and no session cookie or one that names nobody; cookies the app never reads do not count),
    and a signed-in person's GET from the page kept for their audience, their own parts filled in.

    `revision_reader(database)` gives the content and votes revisions as a new transaction would see them, or an
    awaitable of them, first of what the read gives (PostgreSQL's single-flight read, app.revision.PostgresWatcher,
    gives the sessions revision too); a page kept under another content revision, or finished under another votes
    revision, is not used (and the app renders and keeps the page again). Anything unusual falls through to the app;
    so does a database that cannot be read (the app then answers with its own error page).

    A signed-in person is answered here only when their request carries the session and CSRF cookies and no flash
    message, `signed_in_reader(database, session cookie)` says whose session it is (at once or
    awaited, as the revisions) — a
    customer's or a signed-in person's without an organisation, never staff —, and the app already answered
    someone of the same audience at this address from the page still kept: the page is filled in as the app fills
    it (`_assemble`: their votes on its cards, their name, their CSRF token) and sent with the headers the app sent.
    """

    def __init__(self, app: Any, *, cache_getter: Callable[[], PageCache | None], database_getter: Callable[[], Any],
                 revision_reader: Callable[[Any], tuple[int, int] | Awaitable[tuple[int, ...]]] | None = None,
                 signed_in_reader: SignedInReader | None = None, session_cookie: str = "",
                 csrf_cookie: str = "", flash_cookie: str = FLASH_COOKIE) -> None:
        self.app = app
        self.cache_getter = cache_getter
        self.database_getter = database_getter
        self.revision_reader = revision_reader or revision.peek
        self.signed_in_reader = signed_in_reader
        self.session_cookie = session_cookie
        self.csrf_cookie = csrf_cookie
        self.flash_cookie = flash_cookie

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        cookie: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"cookie" and cookie is None:
                cookie = value
            elif name in _PERSONAL_HEADERS:
                await self.app(scope, receive, send)
                return
        if cookie is None:
            await self._visitor(scope, receive, send)
            return
        # Read as the app reads it (Starlette's parser): a cookie the app never reads (a consent banner's, an
        # analytics script's, the CSRF cookie a form left) changes nothing of the answer, and the visitor carrying
        # it is answered as a cookie-less one; a session or a flash message is the app's, or the signed-in path's.
        jar = cookie_parser(cookie.decode("latin-1"))
        if self.session_cookie not in jar and self.flash_cookie not in jar:
            await self._visitor(scope, receive, send)
        elif self.signed_in_reader is not None:
            await self._signed_in(scope, receive, send, jar)
        else:
            await self.app(scope, receive, send)

    async def _visitor(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        cache = self.cache_getter()
        # A campaign's or an ad's link is answered the finished page of the address without its tracking
        # parameters, which no page reads (the app answers the same: `cached_render`).
        path, query = scope["path"], _untracked(scope["query_string"])
        if cache is not None and cache.might_have(path, query):
            revs: tuple[int, ...] | None
            try:
                read = self.revision_reader(self.database_getter())
                revs = read if isinstance(read, tuple) else await read
            except Exception:  # the app answers, with its own error page if it must
                revs = None
            if revs is not None and await self._send_visitors(scope, send, cache, revs[0], revs[1], path, query):
                return
        finishing = _Finishing()
        scope[FINISHING] = finishing
        start: dict[str, Any] | None = None
        chunks: list[bytes] = []

        async def keeping(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, keeping)
        if finishing.kept is None or start is None or start["status"] != 200:
            return
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROPPED_HEADERS]
        if any(k.lower() == b"set-cookie" for k, _ in headers):
            return
        cache, rev, votes, key = finishing.kept
        cache.keep_finished(rev, votes, key, path, query, start["status"], headers, b"".join(chunks))

    async def _send_visitors(self, scope: dict[str, Any], send: Any, cache: PageCache, rev: int, votes: int,
                             path: str, query: bytes, *, named_session: bool = False) -> bool:
        """Send the visitors' finished answer kept for this address (its query without tracking parameters) under these
        revisions (made again here when only the counts moved, `_refill`); False when there is none (the app answers).
        `named_session`: the request's session cookie names nobody (ResponseMiddleware makes the answer private, and
        is told its bytes are every visitor's, compressed once for all)."""
        found = cache.finished(rev, votes, path, query) or self._refill(scope, cache, rev, votes, path, query)
        if found is None:
            return False
        if named_session:
            scope[VISITORS_BYTES] = True
        status, headers, body = found
        metrics.name_route(scope, metrics.KEPT_ROUTE)  # answered before routing (app/metrics.py)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True

    def _fill_here(self, scope: dict[str, Any], cache: PageCache, page: Page, viewer: Viewer, votes: int,
                   headers: list[tuple[bytes, bytes]]) -> tuple[bytes, list[tuple[bytes, bytes]], bool] | None:
        """A kept page filled for `viewer` before the stack, as the app fills it (`_assemble`), with a state of the
        request's own: (body, `headers` with the body's length and ETag, whether it holds a CSRF token); None when
        a filler left something only the app does (a flash to clear). The request's state is as it came in when
        the app is to answer instead (None, or an exception)."""
        database = self.database_getter()
        state = scope.get("state")
        scope["state"] = dict(state or {})  # this request's own, as IsolatedStateMiddleware would give it
        filling = Filling(request=Request(scope), viewer=viewer, page=page, votes_revision=votes,
                          open_session=lambda: database.new_session(write=False), read_rows=database.read_rows)
        try:
            body, etag, needs_token = _assemble(cache, filling)
        except Exception:
            scope["state"] = state
            raise
        finally:
            if filling.opened is not None:
                filling.opened.close()
        if filling.on_response:
            scope["state"] = state
            return None
        return body, [(k, str(len(body)).encode() if k == b"content-length" else etag.encode() if k == b"etag" else v)
                      for k, v in headers], needs_token

    def _refill(self, scope: dict[str, Any], cache: PageCache, rev: int, votes: int, path: str, query: bytes
                ) -> tuple[int, list[tuple[bytes, bytes]], bytes] | None:
        """A visitor's finished answer made again here after a vote moved the votes revision, from its page still
        kept: its vote slots filled with the counts as they are now (one short read of the counts, once per votes
        revision and worker), as the app would fill them, and kept under `votes`. Without this every vote sent the
        next visitor of every kept address through the whole app, in every worker. None (the app answers) when the
        page cannot be filled here."""
        page = cache.refillable(rev, votes, path, query)
        key = page._key if page is not None else None
        if page is None or page.finished is None or key is None:
            return None
        status, headers, _ = page.finished
        try:
            filled = self._fill_here(scope, cache, page, ANONYMOUS, votes, headers)
        except Exception:  # the app answers, with its own error page if it must
            return None
        if filled is None or filled[2]:  # a flash or a CSRF token: never so for a page kept finished; the app's if ever
            return None
        body, headers, _ = filled
        cache.keep_finished(rev, votes, key, path, query, status, headers, body)
        cache.refills += 1
        return status, headers, body

    async def _signed_in(self, scope: dict[str, Any], receive: Any, send: Any, jar: dict[str, str]) -> None:
        cache = self.cache_getter()
        if cache is None:
            await self.app(scope, receive, send)
            return
        token, csrf = jar.get(self.session_cookie), jar.get(self.csrf_cookie)
        # No flash message (shown once, then cleared: the app's to handle). Cookies the app never reads do not matter.
        # A live session needs its CSRF cookie too (the app would mint one); a session cookie that names nobody
        # (signed out elsewhere, ended, expired, made up) is a visitor's, who needs none on the pages kept finished.
        finishing = None
        if token and self.flash_cookie not in jar and len(csrf or "") <= 100:
            signed_in = bool(csrf) and cache.might_have_signed_in()
            address = scope["path"], _untracked(scope["query_string"])
            if ((signed_in or cache.might_have(*address))
                    and await self._answer_signed_in(scope, send, cache, token, address, signed_in=signed_in)):
                return
            if csrf:
                finishing = _Finishing()
                scope[FINISHING] = finishing
        start: dict[str, Any] | None = None

        async def noting(message: dict[str, Any]) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            await send(message)

        await self.app(scope, receive, noting)
        if finishing is None or finishing.signed_in is None or start is None or start["status"] != 200:
            return
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() not in _DROPPED_HEADERS]
        if any(k.lower() == b"set-cookie" for k, _ in headers):
            return
        cache, rev, key, who = finishing.signed_in
        cache.keep_signed_in(rev, key, scope["path"], scope["query_string"], who, headers)

    async def _answer_signed_in(self, scope: dict[str, Any], send: Any, cache: PageCache, token: str,
                                address: tuple[str, bytes], *, signed_in: bool) -> bool:
        """A request with a session cookie: answered from the page kept for the person's audience (`signed_in`:
        such pages are kept), or, when the cookie names nobody, as a visitor — the visitors' finished answer, which
        is what the app would answer (ResponseMiddleware still marks it private: the request named a session)."""
        assert self.signed_in_reader is not None  # nosec B101 # checked by the caller
        database = self.database_getter()
        try:
            read = self.signed_in_reader(database, token)
            content, votes, viewer = read if isinstance(read, tuple) else await read
        except Exception:  # the app answers, with its own error page if it must
            return False
        if viewer is None or viewer.user is None:  # signed out, ended, expired or unknown: a visitor
            return await self._send_visitors(scope, send, cache, content, votes, *address, named_session=True)
        who = audience(viewer)
        if who is None or not signed_in:  # staff: never from kept pages; nor anyone without a CSRF cookie
            return False
        page = cache.signed_in_page(content, votes, scope["path"], scope["query_string"], who)
        if page is None or page.signed_in_headers is None:
            return False
        filled = self._fill_here(scope, cache, page, viewer, votes, page.signed_in_headers)
        if filled is None:  # nothing of the kind without a flash cookie; the app's to handle if ever
            return False
        body, headers, _ = filled
        metrics.name_route(scope, metrics.KEPT_ROUTE)  # answered before routing (app/metrics.py)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return True
