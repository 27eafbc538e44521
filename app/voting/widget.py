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
from collections.abc import Sequence

from app.pagecache import Filling, PageCache, Slot
from app.voting import service as voting
from app.voting.models import Importance
from app.web import templates

KIND = "vote"
_UNVOTED = ""


def register(cache: PageCache) -> None:
    """Fill the vote slots of the pages `cache` keeps."""
    cache.register(KIND, VoteWidgets())


def render_widget(filling: Filling, state: voting.VoteState, *, widget: str = "card") -> str:
    return templates.env.get_template("voting/_vote.html").render(
        request=filling.request, viewer=filling.viewer, vote=state, widget=widget, csrf_token=filling.csrf)


_BY_KEY: dict[str, Importance] = {importance.key: importance for importance in Importance}


class VoteWidgets:
    """The page cache's filler for `slot("vote", state)`."""

    def capture(self, value: voting.VoteState) -> tuple[str, voting.VoteState]:
        # Kept for everyone of the audience: without the vote (or reason) of whoever rendered the page.
        return str(value.item_id), dataclasses.replace(value, mine=None, reason=None)

    def fill(self, filling: Filling, slots: Sequence[Slot]) -> Sequence[str]:
        user = filling.viewer.user
        if user is None:
            keys = [_UNVOTED] * len(slots)
        else:
            mine = voting.votes_of(filling.session, user=user, item_ids=[int(slot.arg) for slot in slots])
            keys = [mine[item_id].key if (item_id := int(slot.arg)) in mine else _UNVOTED for slot in slots]

        def make(slot: Slot, key: str) -> str:
            return render_widget(filling, dataclasses.replace(filling.value(slot), mine=_BY_KEY.get(key)))

        return filling.variants(slots, keys, make)
