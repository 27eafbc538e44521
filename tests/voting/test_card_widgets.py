"""A card's vote widget rendered once for all its counts (app/voting/widget.py `CardWidgets`): what a card shows
must be what rendering it with its count shows, byte for byte, for every kind of viewer and count."""

from __future__ import annotations

import dataclasses
from typing import Any

from starlette.requests import Request

from app.accounts.viewer import ANONYMOUS
from app.voting import widget as widgets
from app.voting.models import Importance
from app.voting.service import VoteState
from app.web import templates


def _request(path: str = "/", query: bytes = b"") -> Request:
    return Request({"type": "http", "method": "GET", "path": path, "query_string": query, "headers": [],
                    "scheme": "http", "server": ("testserver", 80), "root_path": ""})


def _state(**changes: Any) -> VoteState:
    state = VoteState(item_id=7, public_id="it000007", title="Shift swaps", path="/items/it000007/shift-swaps",
                      count=3, mine=None, closed_reason=None, signed_in=True)
    return dataclasses.replace(state, **changes)


def _render(request: Request, state: VoteState) -> str:
    return templates.env.get_template("voting/_vote.html").render(
        request=request, viewer=ANONYMOUS, vote=state, widget="card", csrf_token="TOKEN")


def _cards(request: Request, state: VoteState, cards: widgets.CardWidgets) -> str:
    return cards.html(lambda shown: _render(request, shown), state, (request.url.path, request.url.query))


def test_each_count_shows_what_rendering_it_shows():
    cards = widgets.CardWidgets()
    request = _request("/", b"stage=planned")
    for base in (_state(), _state(signed_in=False), _state(mine=Importance.critical),
                 _state(closed_reason="Released: voting has ended")):
        for count in (0, 1, 2, 3, 10, 999, 1_000_001, None):
            state = dataclasses.replace(base, count=count)
            assert _cards(request, state, cards) == _render(request, state), (base, count)
    assert len(cards._kept) == 4  # one per state but its count (a count of one, or none, is rendered each time)


def test_a_title_holding_the_stand_ins_digits_is_rendered_each_time():
    cards = widgets.CardWidgets()
    request = _request()
    state = _state(title=f"Import {widgets._STAND_IN} rows", count=12)
    assert _cards(request, state, cards) == _render(request, state)
    assert _cards(request, dataclasses.replace(state, count=13), cards) == _render(
        request, dataclasses.replace(state, count=13))
    assert list(cards._kept.values()) == [""]  # not kept: rendered each time


def test_the_address_the_forms_come_back_to_is_part_of_the_key():
    cards = widgets.CardWidgets()
    state = _state(count=4)
    first, second = _request("/", b"stage=planned"), _request("/", b"stage=next")
    assert _cards(first, state, cards) == _render(first, state)
    assert _cards(second, state, cards) == _render(second, state)
    assert "stage=next" in _cards(second, state, cards) and "stage=next" not in _cards(first, state, cards)
