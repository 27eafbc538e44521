"""One vote command for every caller: the vote form, the page's fetch and /api/v1 get the same rules, in the
same order, from app/voting/commands.py — and a vote costs the same few statements whichever way it comes."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import event, func, select

from app.accounts.viewer import Viewer
from app.errors import Conflict, FormInvalid, NotAuthenticated, NotFound
from app.ratelimit import RateLimiter
from app.roadmap.models import Item, Visibility
from app.voting import commands
from app.voting import service as voting
from app.voting.models import Importance, Vote
from app.webhooks import service as webhooks
from tests.factories import make_item, make_pm, make_user
from tests.helpers.csrf import unmasked_tokens
from tests.helpers.http import csrf_token, sign_in

CALLERS = ("form", "fetch", "api")


async def _vote(client: httpx.AsyncClient, caller: str, public_id: str, importance: str = "important",
                reason: str = "") -> httpx.Response:
    """A vote as each caller sends it: the plain form, static/app.js's fetch, a script on /api/v1."""
    token = await csrf_token(client, "/")
    if caller == "api":
        return await client.post(f"/api/v1/items/{public_id}/vote", headers={"X-CSRF-Token": token},
                                 json={"importance": importance, "reason": reason})
    headers = {"X-CSRF-Token": token, "Accept": "application/json"} if caller == "fetch" else {}
    return await client.post(f"/items/{public_id}/vote", headers=headers,
                             data={"importance": importance, "reason": reason, "next": "/", "csrf_token": token})


async def _withdraw(client: httpx.AsyncClient, caller: str, public_id: str) -> httpx.Response:
    token = await csrf_token(client, "/")
    if caller == "api":
        return await client.delete(f"/api/v1/items/{public_id}/vote", headers={"X-CSRF-Token": token})
    headers = {"X-CSRF-Token": token, "Accept": "application/json"} if caller == "fetch" else {}
    return await client.post(f"/items/{public_id}/unvote", headers=headers, data={"next": "/", "csrf_token": token})


def _detail(caller: str, response: httpx.Response) -> str:
    """What the person is told: the JSON detail, or the error page's words."""
    if caller == "form":
        return response.text
    return str(response.json()["detail"])


def _votes(session, item: Item) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id)) or 0


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_caller_refuses_a_closed_item_with_the_same_rule(client, session, caller):
    for slug, reason in (("released", "Released — voting is closed."), ("declined", "Declined — voting is closed.")):
        item = make_item(session, stage_slug=slug)
        voter = make_user(session, password=None)
        voting.cast_vote(session, item=item, user=voter, importance=Importance.important)  # before it closed
        sign_in(client, session, voter)
        for response in (await _vote(client, caller, item.public_id), await _withdraw(client, caller, item.public_id)):
            assert response.status_code == 409
            assert reason in _detail(caller, response)
        assert voting.votes_of(session, user=voter, item_ids=[item.id]) == {item.id: Importance.important}


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_caller_finds_no_merged_item_to_vote_on(client, session, caller):
    """A merged item is gone from every list and lookup, for staff too: its votes went to the item it was
    merged into, and a vote for it answers like a missing item, whoever sends it."""
    target, merged = make_item(session), make_item(session)
    merged.merged_into_id = target.id
    session.flush()
    for voter in (make_pm(session, password=None), make_user(session, password=None)):
        client.cookies.clear()
        sign_in(client, session, voter)
        missing = await _vote(client, caller, "zzzzzzzz")
        for response in (await _vote(client, caller, merged.public_id),
                         await _withdraw(client, caller, merged.public_id)):
            assert (response.status_code, unmasked_tokens(response.text)) == (404, unmasked_tokens(missing.text))
    assert _votes(session, merged) == _votes(session, target) == 0


@pytest.mark.parametrize("caller", CALLERS)
async def test_every_caller_answers_a_hidden_item_like_a_missing_one(client, session, caller):
    sign_in(client, session, make_user(session, password=None))
    missing = await _vote(client, caller, "zzzzzzzz")
    for item in (make_item(session, visibility=Visibility.internal), make_item(session, published=False),
                 make_item(session, visibility=Visibility.customers)):  # the customer has no organisation
        for response in (await _vote(client, caller, item.public_id), await _withdraw(client, caller, item.public_id)):
            assert response.status_code == missing.status_code == 404
            assert unmasked_tokens(response.text) == unmasked_tokens(missing.text)
        assert _votes(session, item) == 0


@pytest.mark.parametrize("caller", CALLERS)
async def test_a_refused_vote_does_not_spend_the_rate_budget(client, session, app, caller):
    """The rules come before the rate limit, for every caller: a vote on a closed item, or with an unknown
    importance, is refused for what it is and leaves the person's budget as it was."""
    app.state.settings.vote_rate_limit = "1/day"
    released, item = make_item(session, stage_slug="released"), make_item(session)
    sign_in(client, session, make_user(session, password=None))
    assert (await _vote(client, caller, released.public_id)).status_code == 409
    assert (await _vote(client, caller, item.public_id, "urgent")).status_code == 422
    assert (await _vote(client, caller, item.public_id)).status_code in (200, 303)
    assert (await _vote(client, caller, item.public_id, "critical")).status_code == 429
    assert _votes(session, item) == 1


async def test_the_command_holds_the_rules_for_any_caller(session, app):
    """Called directly, as any future caller would: the rules are the command's, not the routes'."""
    limits = commands.VoteLimits(limiter=RateLimiter(), per_person="100/minute", per_address="100/minute",
                                 address="127.0.0.1")
    customer = Viewer(user=make_user(session, password=None))
    with pytest.raises(NotFound):
        commands.vote(session, viewer=customer, public_id=make_item(session, published=False).public_id,
                      importance="important", limits=limits)
    with pytest.raises(NotAuthenticated):
        commands.vote(session, viewer=Viewer(user=None), public_id=make_item(session).public_id,
                      importance="important", limits=limits)
    released = make_item(session, stage_slug="released")
    with pytest.raises(Conflict):
        commands.vote(session, viewer=customer, public_id=released.public_id, importance="important", limits=limits)
    with pytest.raises(Conflict):
        commands.withdraw(session, viewer=customer, public_id=released.public_id, limits=limits)
    with pytest.raises(FormInvalid) as refused:
        commands.vote(session, viewer=customer, public_id=make_item(session).public_id, importance="urgent",
                      reason="x" * 2001, limits=limits)
    assert set(refused.value.errors) == {"importance", "reason"}  # every field at once

    item = make_item(session)
    done = commands.vote(session, viewer=customer, public_id=item.public_id, importance="critical", limits=limits)
    assert (done.created, done.importance, done.state.count, done.state.mine) == (True, Importance.critical, 1,
                                                                                 Importance.critical)
    again = commands.vote(session, viewer=customer, public_id=item.public_id, importance="important", limits=limits)
    assert (again.created, again.state.count, again.state.mine) == (False, 1, Importance.important)
    gone = commands.withdraw(session, viewer=customer, public_id=item.public_id, limits=limits)
    assert (gone.removed, gone.state.count, gone.state.mine) == (True, 0, None)


# Statements per request once the worker keeps the person's session (app/deps.py get_voter): the revisions (for the
# settings and the kept session), the locked item, the vote. PostgreSQL: the vote itself is one statement (insert,
# counter, follow and the votes revision's move in CTEs); SQLite runs those steps one by one. The portal's own vote
# routes on PostgreSQL (a form, a fetch): all of it in one statement, the revisions guessed and checked by it
# (app/voting/views.py `_at_once`).
STATEMENTS = {
    "postgresql": {"vote": 3, "revote": 4, "withdraw": 3},
    "sqlite": {"vote": 6, "revote": 5, "withdraw": 5},
}
AT_ONCE = {"vote": 1, "revote": 1, "withdraw": 1}


@pytest.mark.parametrize("caller", CALLERS)
async def test_a_vote_costs_the_same_few_statements_from_every_caller(client, session, caller):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    token = await csrf_token(client, "/")
    seen: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if not statement.lstrip().upper().startswith(("SAVEPOINT", "RELEASE", "ROLLBACK TO")):  # the test's own
            seen.append(statement)

    async def send(action: str, importance: str = "important") -> int:
        if caller == "api":
            headers = {"X-CSRF-Token": token}
            if action == "withdraw":
                response = await client.delete(f"/api/v1/items/{item.public_id}/vote", headers=headers)
            else:
                response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                             json={"importance": importance})
        else:
            headers = {"X-CSRF-Token": token, "Accept": "application/json"} if caller == "fetch" else {}
            path = f"/items/{item.public_id}/{'unvote' if action == 'withdraw' else 'vote'}"
            response = await client.post(path, headers=headers, data={"importance": importance, "next": "/",
                                                                      "widget": "card", "csrf_token": token})
        assert response.status_code in (200, 303)
        return len(seen)

    # Which webhooks want vote events is read once per settings revision and kept (app/webhooks): read it
    # before counting, as any running portal has. With no subscriber a vote then costs no statement more.
    webhooks.wants(session, "vote.created")
    await send("withdraw")  # nothing to withdraw yet: the worker reads the session and keeps it
    engine = session.get_bind().engine
    expected = AT_ONCE if engine.dialect.name == "postgresql" and caller != "api" else STATEMENTS[engine.dialect.name]
    event.listen(engine, "before_cursor_execute", count)
    try:
        for action, importance in (("vote", "important"), ("revote", "critical"), ("withdraw", "")):
            seen.clear()
            assert await send(action, importance) == expected[action], seen
    finally:
        event.remove(engine, "before_cursor_execute", count)
