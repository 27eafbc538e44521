"""Voting as customers do it: on cards and item pages, with plain forms and with the page's JavaScript."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.orm.attributes import set_committed_value

from app.errors import wait_words
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Organisation
from app.roadmap.models import Visibility
from app.voting import service as voting
from app.voting.models import Follow, Importance, Vote
from tests.factories import make_item, make_pm, make_user, stage
from tests.helpers.http import csrf_token, post_form, sign_in
from tests.voting.helpers import vote_json, widget_text


def _rows(session, item) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id))


async def test_vote_change_withdraw_and_vote_again_with_plain_forms(client, session):
    item = make_item(session, title="Shift swaps")
    sign_in(client, session, make_user(session, password=None))

    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "important", "next": "/", "widget": "card"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/#vote-{item.public_id}"
    board = (await client.get("/")).text
    assert widget_text(board, item.public_id).startswith("▲ 1 You voted: Important")
    assert "Your vote is counted: Important." in board

    page = (await client.get(item.path)).text
    assert widget_text(page, item.public_id).startswith("Votes 1 vote You voted: Important")
    assert "Update my vote" in page and "Withdraw my vote" in page

    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "critical", "next": item.path, "widget": "page"}, page=item.path)
    # On the item's page the redirect lands on the message (the first flash's id), which sits just above the
    # widget: landing on the widget left "Your vote is now Critical." above the window.
    assert response.headers["location"] == f"{item.path}#flash"
    page = (await client.get(item.path)).text
    assert re.search(r'<div class="flash flash-success" role="status" id="flash">Your vote is now Critical\.</div>',
                     page)
    assert widget_text(page, item.public_id).startswith("Votes 1 vote You voted: Critical")
    assert re.search(r'value="critical" checked', page)

    response = await post_form(client, f"/items/{item.public_id}/unvote", {"next": item.path}, page=item.path)
    assert response.status_code == 303
    page = (await client.get(item.path)).text
    assert widget_text(page, item.public_id).startswith("Votes 0 votes How much does this matter to you?")
    assert "You voted" not in page and "Withdraw my vote" not in page

    await post_form(client, f"/items/{item.public_id}/vote", {"importance": "nice_to_have", "next": "/"})
    board = (await client.get("/")).text
    assert widget_text(board, item.public_id).startswith("▲ 1 You voted: Nice to have")
    session.refresh(item)
    assert item.vote_count == 1 == _rows(session, item)


async def test_counts_add_up_over_several_people(client, session):
    item = make_item(session)
    for _ in range(2):
        voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    sign_in(client, session, make_user(session, password=None))
    await post_form(client, f"/items/{item.public_id}/vote", {"importance": "critical", "next": "/"})
    assert widget_text((await client.get(item.path)).text, item.public_id).startswith("Votes 3 votes")
    assert widget_text((await client.get("/")).text, item.public_id).startswith("▲ 3 You voted: Critical")


async def test_the_page_script_votes_and_withdraws_with_json(client, session):
    item = make_item(session)
    voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    sign_in(client, session, make_user(session, password=None))

    response = await vote_json(client, item.public_id, "critical")
    assert response.status_code == 200
    body = response.json()
    assert (body["vote_count"], body["my_vote"], body["message"]) == (2, "critical", "Your vote is counted: Critical.")
    assert widget_text(body["html"], item.public_id).startswith("▲ 2 You voted: Critical")
    assert 'name="next" value="/"' in body["html"]

    again = (await vote_json(client, item.public_id, "nice_to_have")).json()
    assert (again["vote_count"], again["my_vote"], again["message"]) == (2, "nice_to_have",
                                                                         "Your vote is now Nice to have.")

    gone = (await vote_json(client, item.public_id, unvote=True)).json()
    assert (gone["vote_count"], gone["my_vote"], gone["message"]) == (1, None, "Your vote is withdrawn.")
    assert "You voted" not in gone["html"] and ">Vote<" in gone["html"]

    twice = (await vote_json(client, item.public_id, unvote=True)).json()
    assert (twice["vote_count"], twice["my_vote"], twice["message"]) == (1, None, "You had not voted for this item.")
    assert widget_text(twice["html"], item.public_id).startswith("▲ 1 Vote")


async def test_tell_us_why_is_stored_as_private_feedback_on_the_item(client, session):
    item = make_item(session)
    customer = make_user(session, password=None, display_name="Ann Customer")
    sign_in(client, session, customer)
    why = "Our night shift loses an hour every week."
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "critical", "reason": why, "next": item.path, "widget": "page"},
                               page=item.path)
    assert response.status_code == 303
    reason = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert reason is not None and reason.kind is FeedbackKind.reason
    assert (reason.author_id, reason.body) == (customer.id, why)
    assert why in widget_text((await client.get(item.path)).text, item.public_id)  # shown back to its author only
    client.cookies.clear()
    assert why not in (await client.get(item.path)).text
    sign_in(client, session, make_user(session, password=None))
    assert why not in (await client.get(item.path)).text


async def test_an_unknown_importance_or_a_long_note_comes_back_with_what_was_typed(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "urgent!!", "reason": "Because of audits", "next": "/"})
    assert response.status_code == 422
    assert voting.IMPORTANCE_MESSAGE in response.text
    assert ">Because of audits</textarea>" in response.text

    long_note = "x" * 2001
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "important", "reason": long_note, "next": "/"})
    assert response.status_code == 422
    assert "Keep it to 2,000 characters (it has 2,001)." in response.text
    assert f">{long_note}</textarea>" in response.text
    assert _rows(session, item) == 0  # nothing was counted

    response = await vote_json(client, item.public_id, "urgent")
    assert response.status_code == 422
    assert response.json()["fields"] == {"importance": voting.IMPORTANCE_MESSAGE}


async def test_released_declined_and_merged_items_say_why_and_refuse_votes(client, session):
    released = make_item(session, stage_slug="released")
    declined = make_item(session, stage_slug="declined")
    sign_in(client, session, make_user(session, password=None))
    for item, reason in ((released, "Released — voting is closed"), (declined, "Declined — voting is closed")):
        page = (await client.get(item.path)).text
        assert f"{reason}." in widget_text(page, item.public_id)
        assert f'action="/items/{item.public_id}/vote"' not in page
        response = await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important"})
        assert response.status_code == 409
        assert f"{reason}." in response.text
        response = await vote_json(client, item.public_id)
        assert response.status_code == 409
        assert response.json() == {"error": "conflict", "detail": f"{reason}."}
        assert (await vote_json(client, item.public_id, unvote=True)).status_code == 409
    board = (await client.get("/")).text
    assert "Released — voting is closed" in widget_text(board, released.public_id)

    target = make_item(session)
    merged = make_item(session)
    set_committed_value(merged, "stage", stage(session, "planned"))
    assert merged.can_be_voted()
    merged.merged_into_id = target.id
    session.flush()
    assert not merged.can_be_voted()
    assert merged.voting_closed_reason() == "Merged into another item — voting is closed"


async def test_a_hidden_item_answers_like_a_missing_one(client, session):
    customer = make_user(session, password=None)
    sign_in(client, session, customer)
    organisation = Organisation(name="Acme")
    session.add(organisation)
    session.flush()
    hidden = [
        make_item(session, visibility=Visibility.internal),
        make_item(session, published=False),
        make_item(session, visibility=Visibility.customers),  # the customer has no organisation
    ]
    missing_page = await post_form(client, "/items/zzzzzzzz/vote", {"importance": "important"})
    missing_json = await vote_json(client, "zzzzzzzz")
    assert missing_page.status_code == missing_json.status_code == 404
    for item in hidden:
        response = await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important"})
        assert response.status_code == 404
        assert "There is nothing at this address." in response.text
        response = await vote_json(client, item.public_id)
        assert (response.status_code, response.json()) == (404, missing_json.json())
        for action in ("unvote", "follow", "unfollow"):
            assert (await post_form(client, f"/items/{item.public_id}/{action}", {})).status_code == 404
    assert session.scalar(select(func.count()).select_from(Vote)) == 0

    customer.organisation_id = organisation.id
    session.flush()
    response = await vote_json(client, hidden[2].public_id)
    assert response.status_code == 200  # a customer of an organisation may see and vote for it


async def test_visitors_see_counts_and_a_sign_in_link_back_to_the_item(client, session):
    item = make_item(session, title="Shift swaps")
    voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    board = (await client.get("/")).text
    assert widget_text(board, item.public_id) == "▲ 1 Sign in to vote"
    sign_in_link = f'href="/login?next={item.path}"'
    assert sign_in_link in board
    page = (await client.get(item.path)).text
    assert widget_text(page, item.public_id) == "Votes 1 vote Sign in to vote"
    assert sign_in_link in page
    assert "Follow" not in page

    response = await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important"})
    assert response.status_code == 303
    assert response.headers["location"] == f"/login?next={item.path}"
    response = await vote_json(client, item.public_id)
    assert response.status_code == 401 and response.json()["error"] == "not_authenticated"


async def test_follow_and_unfollow_and_voting_follows(client, session):
    item = make_item(session)
    customer = make_user(session, password=None)
    sign_in(client, session, customer)
    page = (await client.get(item.path)).text
    assert ">Follow<" in page and "Follow to hear when this item changes." in page

    response = await post_form(client, f"/items/{item.public_id}/follow", {"next": item.path}, page=item.path)
    assert response.status_code == 303 and response.headers["location"] == f"{item.path}#flash"
    page = (await client.get(item.path)).text
    assert ">Unfollow<" in page and "You follow this item: you hear of its changes as your" in page and 'href="/me#notifications-title">email choices</a>' in page
    assert voting.is_following(session, item=item, user=customer)

    await post_form(client, f"/items/{item.public_id}/unfollow", {"next": item.path}, page=item.path)
    assert ">Follow<" in (await client.get(item.path)).text
    assert not voting.is_following(session, item=item, user=customer)

    await post_form(client, f"/items/{item.public_id}/vote", {"importance": "important", "next": item.path})
    assert ">Unfollow<" in (await client.get(item.path)).text

    token_page = await client.get(item.path)
    token = re.search(r'<meta name="csrf-token" content="([^"]+)">', token_page.text).group(1)  # type: ignore[union-attr]
    response = await client.post(f"/items/{item.public_id}/unfollow", data={"next": item.path},
                                 headers={"X-CSRF-Token": token, "Accept": "application/json"})
    body = response.json()
    assert body["following"] is False and ">Follow<" in body["html"]
    # The row stays as an opt-out (she voted: without it she would still be told of changes).
    assert session.scalar(select(func.count()).select_from(Follow).where(Follow.stopped_at.is_(None))) == 0
    assert not voting.is_following(session, item=item, user=customer)


async def test_next_only_leads_back_into_the_portal(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "important", "next": "https://evil.example/"})
    assert response.headers["location"] == f"{item.path}#flash"  # the item's page, at the message


async def test_a_next_too_long_for_any_address_is_dropped_and_the_vote_with_its_reason_counts(client, session):
    """As /unvote, /follow and /unfollow do: the form goes back to the item, nothing typed is lost."""
    item = make_item(session)
    customer = make_user(session, password=None)
    sign_in(client, session, customer)
    too_long = "/" + "a" * 2000
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "critical", "reason": "Payroll closes on Fridays", "next": too_long,
                                "widget": "page"}, page=item.path)
    assert response.status_code == 303 and response.headers["location"] == f"{item.path}#flash"
    assert "Your vote is counted: Critical." in (await client.get(item.path)).text
    reason = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert reason is not None and reason.body == "Payroll closes on Fridays"

    token = await csrf_token(client, item.path)  # what static/app.js sends
    fetched = await client.post(f"/items/{item.public_id}/vote",
                                data={"importance": "nice_to_have", "reason": "Payroll closes on Fridays",
                                      "reason_shown": "yes", "next": too_long, "widget": "page"},
                                headers={"X-CSRF-Token": token, "Accept": "application/json"})
    assert fetched.status_code == 200, fetched.text
    body = fetched.json()
    assert (body["vote_count"], body["my_vote"]) == (1, "nice_to_have")
    assert f'name="next" value="{item.path}"' in body["html"]


async def test_me_lists_my_votes_and_follows(client, session):
    voted = make_item(session, title="Voted item")
    followed = make_item(session, title="Followed item")
    released = make_item(session, title="Shipped item", stage_slug="released")
    customer = make_user(session, password=None)
    voting.cast_vote(session, item=voted, user=customer, importance=Importance.critical)
    voting.cast_vote(session, item=released, user=customer, importance=Importance.important)
    voting.follow(session, item=followed, user=customer)
    voting.cast_vote(session, item=make_item(session, title="Captured item"), user=customer,
                     importance=Importance.important, captured_by=make_pm(session))
    sign_in(client, session, customer)

    page = (await client.get("/me")).text
    votes = page[page.index('id="your-votes"'):page.index('id="following"')]
    assert "Voted item" in votes and "Critical" in votes and "Shipped item" in votes
    assert "Captured item" not in votes  # listed with the votes the team recorded
    assert votes.count(">Withdraw<") == 1  # a released item keeps its votes
    following = page[page.index('id="following"'):]
    assert "Followed item" in following and "Voted item" in following

    response = await post_form(client, f"/items/{voted.public_id}/unvote", {"next": "/me#your-votes"}, page="/me")
    assert response.headers["location"] == "/me#your-votes"
    page = (await client.get("/me")).text
    assert "Voted item" not in page[page.index('id="your-votes"'):page.index('id="following"')]


async def test_votes_are_rate_limited_per_person(client, session, app):
    app.state.settings.vote_rate_limit = "2/day"
    item = make_item(session)
    customer = make_user(session, password=None)
    sign_in(client, session, customer)
    for importance in ("important", "critical"):
        assert (await vote_json(client, item.public_id, importance)).status_code == 200
    response = await vote_json(client, item.public_id, "nice_to_have")
    assert response.status_code == 429
    assert response.json()["error"] == "rate_limited" and int(response.headers["retry-after"]) >= 1
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "nice_to_have", "reason": "Every Monday", "next": item.path,
                                "widget": "page"}, page=item.path)
    assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
    assert "Your vote was not counted yet" in response.text
    assert f"Please wait {wait_words(int(response.headers['retry-after']))} and" in response.text  # as Retry-After
    assert ">Every Monday</textarea>" in response.text and 'value="nice_to_have" checked' in response.text
    response = await post_form(client, f"/items/{item.public_id}/unvote", {"next": "/"})
    assert response.status_code == 429 and "Too many requests" in response.text
    assert voting.votes_of(session, user=customer, item_ids=[item.id]) == {item.id: Importance.critical}


async def test_votes_are_rate_limited_per_address_too(client, session, app):
    app.state.settings.vote_ip_rate_limit = "3/day"
    item = make_item(session)
    for _ in range(3):
        client.cookies.clear()
        sign_in(client, session, make_user(session, password=None))
        assert (await vote_json(client, item.public_id)).status_code == 200
    client.cookies.clear()
    sign_in(client, session, make_user(session, password=None))
    assert (await vote_json(client, item.public_id)).status_code == 429
    session.refresh(item)
    assert item.vote_count == 3 == _rows(session, item)
