"""Votes through /api/v1: a customer's session cookie plus the X-CSRF-Token header, the same rules as the pages."""

from __future__ import annotations

from sqlalchemy import select

from app.feedback.models import Feedback, FeedbackKind
from app.roadmap.models import Visibility
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import csrf_token, sign_in


async def _signed_in(client, session):  # type: ignore[no-untyped-def]
    """A signed-in customer's client and the token of the page's meta tag, as a script would take it."""
    user = make_user(session, password=None)
    sign_in(client, session, user)
    return user, {"X-CSRF-Token": await csrf_token(client, "/")}


async def test_vote_change_list_and_withdraw(client, session):
    item, other = make_item(session, title="Shift swaps"), make_item(session, title="Dark mode")
    voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    user, headers = await _signed_in(client, session)

    response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                 json={"importance": "critical", "reason": "Audits every month."})
    assert response.status_code == 200
    assert response.json() == {"item": item.public_id, "my_vote": "critical", "vote_count": 2}
    reason = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert reason is not None and reason.kind is FeedbackKind.reason and reason.author_id == user.id
    assert voting.is_following(session, item=item, user=user)

    changed = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                json={"importance": "nice_to_have"})
    assert changed.json() == {"item": item.public_id, "my_vote": "nice_to_have", "vote_count": 2}

    listing = {i["id"]: i for i in (await client.get("/api/v1/items")).json()["items"]}
    assert (listing[item.public_id]["my_vote"], listing[item.public_id]["vote_count"]) == ("nice_to_have", 2)
    assert listing[other.public_id]["my_vote"] is None
    assert (await client.get(f"/api/v1/items/{item.public_id}")).json()["my_vote"] == "nice_to_have"

    mine = (await client.get("/api/v1/me/votes")).json()["votes"]
    assert [(v["item"]["id"], v["importance"], v["recorded_by_team"]) for v in mine] == [
        (item.public_id, "nice_to_have", False)]
    assert mine[0]["item"]["my_vote"] == "nice_to_have"

    gone = await client.delete(f"/api/v1/items/{item.public_id}/vote", headers=headers)
    assert gone.json() == {"item": item.public_id, "my_vote": None, "vote_count": 1}
    again = await client.delete(f"/api/v1/items/{item.public_id}/vote", headers=headers)
    assert again.status_code == 200 and again.json()["vote_count"] == 1
    assert (await client.get("/api/v1/me/votes")).json() == {"votes": []}

    client.cookies.delete("ahead_session")
    assert (await client.get(f"/api/v1/items/{item.public_id}")).json()["my_vote"] is None


async def test_a_write_without_the_csrf_header_is_refused(client, session):
    item = make_item(session)
    user, _ = await _signed_in(client, session)
    missing = await client.post(f"/api/v1/items/{item.public_id}/vote", json={"importance": "important"})
    assert missing.status_code == 403 and missing.json()["error"] == "csrf_failed"
    wrong = await client.delete(f"/api/v1/items/{item.public_id}/vote", headers={"X-CSRF-Token": "0" * 64})
    assert wrong.status_code == 403
    assert voting.votes_of(session, user=user, item_ids=[item.id]) == {}
    session.refresh(item)
    assert item.vote_count == 0


async def test_signed_out_callers_get_401(client, session):
    item = make_item(session)
    headers = {"X-CSRF-Token": await csrf_token(client, "/")}
    response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                 json={"importance": "important"})
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"
    assert (await client.get("/api/v1/me/votes")).status_code == 401


async def test_errors_hidden_closed_invalid_and_too_many(client, session, app):
    hidden = make_item(session, visibility=Visibility.internal)
    released = make_item(session, stage_slug="released")
    item = make_item(session)
    _, headers = await _signed_in(client, session)

    missing = await client.post("/api/v1/items/zzzzzzzz/vote", headers=headers, json={"importance": "important"})
    response = await client.post(f"/api/v1/items/{hidden.public_id}/vote", headers=headers,
                                 json={"importance": "important"})
    assert response.status_code == missing.status_code == 404 and response.json() == missing.json()

    response = await client.post(f"/api/v1/items/{released.public_id}/vote", headers=headers,
                                 json={"importance": "important"})
    assert response.status_code == 409
    assert response.json() == {"error": "conflict", "detail": "Released — voting is closed."}

    response = await client.post(f"/api/v1/items/{item.public_id}/vote", content=b'{"importance": "importa',
                                 headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 400  # as /openapi.json says
    assert response.json() == {"error": "bad_json", "detail": "The body is not valid JSON."}
    assert session.scalar(select(Vote).where(Vote.item_id == item.id)) is None  # nothing counted

    response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                 json={"importance": "urgent"})
    assert response.status_code == 422
    assert "'nice_to_have', 'important' or 'critical'" in response.json()["fields"]["importance"]
    response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                 json={"importance": "important", "reason": "x" * 2001})
    assert response.status_code == 422 and "reason" in response.json()["fields"]

    app.state.settings.vote_rate_limit = "1/day"
    assert (await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                              json={"importance": "important"})).status_code == 200
    limited = await client.delete(f"/api/v1/items/{item.public_id}/vote", headers=headers)
    assert limited.status_code == 429 and limited.json()["error"] == "rate_limited"
    assert "retry-after" in limited.headers


async def test_votes_the_team_recorded_are_listed_as_such(client, session):
    item = make_item(session)
    user, _ = await _signed_in(client, session)
    voting.cast_vote(session, item=item, user=user, importance=Importance.critical, captured_by=make_pm(session))
    votes = (await client.get("/api/v1/me/votes")).json()["votes"]
    assert [(v["importance"], v["recorded_by_team"]) for v in votes] == [("critical", True)]
