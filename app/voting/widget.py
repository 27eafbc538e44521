"""The cards' vote widgets in kept pages: the voting domain's filler for the page cache (app/pagecache.py).

A board kept by the page cache is the same for everyone of one audience, but each card's widget says
whether *this* person voted, and how. The board's template opens a slot per card with the card's
`VoteState` (`slot("vote", state)`); this filler keeps that state without the viewer's own vote, and per
request asks for the viewer's votes on all the page's cards in one query, then gives each card the
widget for its state: unvoted, or one of the three importances. Each widget is rendered once per page and
variant and kept with the page (the cache counts it against its size).
"""

from __future__ import annotations

import dataclasses
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence

from sqlalchemy.orm import Session

from app import revision
from app.pagecache import Filling, PageCache, Slot
from app.voting import service as voting
from app.voting.models import Importance
from app.web import templates

KIND = "vote"
_UNVOTED = ""


def register(cache: PageCache) -> VoteWidgets:
    """Fill the vote slots of the pages `cache` keeps (with the filler that does it)."""
    widgets = VoteWidgets()
    cache.register(KIND, widgets)
    return widgets


def render_widget(filling: Filling, state: voting.VoteState, *, widget: str = "card") -> str:
    request = filling.request

    def render(shown: voting.VoteState) -> str:
        return templates.env.get_template("voting/_vote.html").render(
            request=request, viewer=filling.viewer, vote=shown, widget=widget, csrf_token=filling.csrf)

    if widget != "card":
        return render(state)
    # The address the card's forms come back to, when signed in (the template's `here`)
    return CARDS.html(render, state, (request.url.path, request.url.query))


# Stand-ins for a card's count while its widget is rendered for every count at once (`CardWidgets`); the second
# checks that the count is all the first stands for in the HTML.
_STAND_IN, _CHECK = "7350019283746511", "7350019283746513"


class CardWidgets:
    """A card's vote widget (`voting/_vote.html`, widget "card") rendered once for all its counts, per worker: with a
    stand-in count, which each use replaces. A vote changes one card's count, and a board kept by the page cache is
    filled again after every vote; the JSON answer to a vote shows the card with its new count too.

    Rendered each time instead: a count of one ("1 vote"), hidden counts, and a widget whose HTML holds the
    stand-in's digits for anything else (checked once with a second stand-in). The key is the state but its count,
    and what the caller says the rendering also depends on (the address its forms come back to)."""

    MAX_KEPT = 4096

    def __init__(self) -> None:
        self._kept: dict[tuple[object, ...], str] = {}

    def html(self, render: Callable[[voting.VoteState], str], state: voting.VoteState,
             depends_on: tuple[object, ...]) -> str:
        count = state.count
        if count is None or count == 1:
            return render(state)
        key = (dataclasses.replace(state, count=None), *depends_on)
        template = self._kept.get(key)
        if template is None:
            template = render(dataclasses.replace(state, count=int(_STAND_IN)))
            if template.replace(_STAND_IN, _CHECK) != render(dataclasses.replace(state, count=int(_CHECK))):
                template = ""  # kept as such: rendered each time
            if len(self._kept) >= self.MAX_KEPT:
                self._kept.clear()
            self._kept[key] = template
        if not template:
            return render(state)
        return template.replace(_STAND_IN, str(count))


CARDS = CardWidgets()


_BY_KEY: dict[str, Importance] = {importance.key: importance for importance in Importance}


def _session(filling: Filling) -> Session | None:
    """The session for the filler's reads, or None before the stack: a plain read outside any transaction there
    (`Filling.read_rows`: no session opened for it, one round trip)."""
    return None if filling.read_rows is not None else filling.session


class VoteWidgets:
    """The page cache's filler for `slot("vote", state)`."""

    def __init__(self) -> None:
        self._counts_revision: int | None = None
        self._counts: dict[int, int] = {}  # item id -> its count under `_counts_revision`
        # The items whose counts the kept pages asked for lately, oldest first: on PostgreSQL the worker's revision
        # read brings their counts back with it when the votes revision moves (`followed`, `seen`)
        self._wanted: OrderedDict[int, None] = OrderedDict()

    # The read costs about 7 µs an item, once per vote and worker, every request waiting for the revision read waiting
    # for it too: the board's 48 cards 0.3 ms, 100 items 0.7 ms, 300 items 2 ms (bench/README.md)
    MAX_FOLLOWED = 100

    def followed(self) -> tuple[int | None, list[int]]:
        """(the votes revision the counts known are under, the items asked for lately): what the next revision read
        brings the counts of, if that revision moved (`app.revision.PostgresWatcher.follow_counts`)."""
        return self._counts_revision, list(self._wanted)

    def seen(self, votes: int, counts: dict[int, int]) -> None:
        """Counts read after votes revision `votes` was (at least as new as it): known under it."""
        self._under(votes)
        self._counts.update(counts)

    def capture(self, value: voting.VoteState) -> tuple[str, voting.VoteState]:
        # Kept for everyone of the audience: without the vote (or reason) of whoever rendered the page.
        return str(value.item_id), dataclasses.replace(value, mine=None, reason=None)

    def counts(self, filling: Filling, item_ids: list[int]) -> dict[int, int]:
        """The current counts of these items: from what this worker read under the current votes revision, the
        missing ones in one query."""
        self._current(filling)
        self._want(item_ids)
        known = self._counts
        missing = [item_id for item_id in item_ids if item_id not in known]
        if missing:
            known.update(voting.counts_of(_session(filling), missing, read_rows=filling.read_rows))
        return known

    def _current(self, filling: Filling) -> int:
        """The votes revision; what was read under an older one is forgotten."""
        return self._under(filling.votes_revision if filling.votes_revision is not None
                           else revision.votes(filling.session))

    def _want(self, item_ids: Iterable[int]) -> None:
        wanted = self._wanted
        for item_id in item_ids:
            wanted[item_id] = None
            wanted.move_to_end(item_id)
        while len(wanted) > self.MAX_FOLLOWED:
            wanted.popitem(last=False)

    def _under(self, rev: int) -> int:
        if rev != self._counts_revision:
            self._counts = {}
            self._counts_revision = rev
        return rev

    def fill(self, filling: Filling, slots: Sequence[Slot]) -> Sequence[str]:
        # What this person's widgets on this page are is kept with the page under the votes revision: a vote,
        # withdrawal or importance change anywhere moves it, and the next request reads their votes again.
        user = filling.viewer.user
        viewer_id = user.id if user is not None else None
        rev = self._current(filling)
        kept = filling.page.filled_for(KIND, viewer_id, rev)
        if kept is not None:
            return kept
        filled = self._fill(filling, slots)
        filling.page.keep_filled(KIND, viewer_id, rev, filled)
        return filled

    def _fill(self, filling: Filling, slots: Sequence[Slot]) -> list[str]:
        ids = [int(slot.arg) for slot in slots]
        user = filling.viewer.user
        if user is None:
            mine_keys = [_UNVOTED] * len(slots)
        else:
            mine = voting.votes_of(_session(filling), user=user, item_ids=ids, read_rows=filling.read_rows)
            mine_keys = [mine[item_id].key if item_id in mine else _UNVOTED for item_id in ids]
        counts = self.counts(filling, ids)
        # A slot's count where its page shows one (hidden counts stay hidden): "key:count", else "key:".
        keys = [f"{key}:{counts.get(item_id, 0) if filling.value(slot).count is not None else ''}"
                for key, item_id, slot in zip(mine_keys, ids, slots, strict=True)]

        def make(slot: Slot, variant: str) -> str:
            key, _, count = variant.partition(":")
            state = dataclasses.replace(filling.value(slot), mine=_BY_KEY.get(key),
                                        count=int(count) if count else None)
            return render_widget(filling, state)

        def stale(variant: str, current: str) -> bool:
            return variant.partition(":")[2] != current.partition(":")[2]

        return filling.variants(slots, keys, make, stale=stale)
