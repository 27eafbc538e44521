""""Tell us why": one reason per vote, shown back to the person who gave it and edited in place, with and
without JavaScript and through the API; the inbox and /me list it once."""

from __future__ import annotations

import re
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.db import utcnow
from app.feedback import service as feedback
from app.feedback.models import Feedback, FeedbackKind
from app.roadmap import merge as merging
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import csrf_token, post_form, sign_in
from tests.voting.helpers import widget_text


def _reasons(session, item) -> list[str]:  # type: ignore[no-untyped-def]
    return list(session.scalars(select(Feedback.body).where(Feedback.item_id == item.id,
                                                            Feedback.kind == FeedbackKind.reason)))


async def _page_vote(client: httpx.AsyncClient, item, importance: str, reason: str, *,  # type: ignore[no-untyped-def]
                     shown: bool = False, as_json: bool = False) -> httpx.Response:
    """The item page's vote form, as a browser posts it (with static/app.js when `as_json`)."""
    token = await csrf_token(client, item.path)
    data = {"importance": importance, "reason": reason, "next": item.path, "widget": "page", "csrf_token": token}
    if shown:
        data["reason_shown"] = "1"
    headers = {"X-CSRF-Token": token, "Accept": "application/json"} if as_json else {}
    return await client.post(f"/items/{item.public_id}/vote", data=data, headers=headers)


def _textarea(page: str) -> str:
    match = re.search(r'<textarea id="f-reason"[^>]*>(.*?)</textarea>', page, re.DOTALL)
    assert match, "no reason box"
    return match.group(1)


async def test_updating_a_vote_edits_the_one_reason_instead_of_adding_another(client, session):
    item = make_item(session, title="Shift swaps")
    customer = make_user(session, password=None)
    sign_in(client, session, customer)

    response = await _page_vote(client, item, "important", "Night shifts lose an hour.")
    assert response.status_code == 303
    page = (await client.get(item.path)).text
    assert "Your vote is counted: Important. Thank you for telling us why." in page
    assert "Your reason · only the product team reads it Night shifts lose an hour." in widget_text(page, item.public_id)
    assert _textarea(page) == "Night shifts lose an hour." and 'name="reason_shown" value="1"' in page

    first = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert first is not None
    first_id = first.id
    session.execute(update(Feedback).where(Feedback.id == first_id).values(created_at=utcnow() - timedelta(days=3)))

    await _page_vote(client, item, "critical", "Night shifts lose two hours now.", shown=True)
    page = (await client.get(item.path)).text
    assert "Your vote is now Critical. Your reason is updated." in page
    assert _reasons(session, item) == ["Night shifts lose two hours now."]
    session.expire_all()
    edited = session.get(Feedback, first_id)
    assert edited is not None and edited.body == "Night shifts lose two hours now."  # the same row, in place
    assert edited.created_at > utcnow() - timedelta(minutes=5)  # its time is the edit's: first in the inbox

    me = (await client.get("/me")).text
    assert me.count("Night shifts lose") == 1 and "Night shifts lose two hours now." in me

    # The same text again (the box shows the saved reason) changes nothing and says nothing about it.
    session.execute(update(Feedback).where(Feedback.id == first_id).values(created_at=utcnow() - timedelta(days=1)))
    await _page_vote(client, item, "important", "Night shifts lose two hours now.", shown=True)
    assert "Your vote is now Important." in (page := (await client.get(item.path)).text)
    assert "Your reason is updated" not in page
    session.expire_all()
    kept = session.get(Feedback, first_id)
    assert kept is not None and kept.created_at < utcnow() - timedelta(hours=12)

    client.cookies.clear()
    sign_in(client, session, make_pm(session, password=None))
    inbox = (await client.get("/admin/feedback")).text
    assert inbox.count("Night shifts lose") == 1


async def test_emptying_the_box_that_showed_the_reason_takes_it_back(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    await _page_vote(client, item, "important", "Audits every month.")
    await _page_vote(client, item, "important", "   ")  # a box that showed nothing: the reason stays
    assert _reasons(session, item) == ["Audits every month."]
    await _page_vote(client, item, "important", "", shown=True)
    assert _reasons(session, item) == []
    page = (await client.get(item.path)).text
    assert "Your reason is taken back." in page and "Your reason ·" not in page and _textarea(page) == ""


async def test_a_card_vote_leaves_the_reason_as_it_was(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    await _page_vote(client, item, "important", "Audits every month.")
    await post_form(client, f"/items/{item.public_id}/vote", {"importance": "critical", "next": "/", "widget": "card"})
    assert _reasons(session, item) == ["Audits every month."]


async def test_with_javascript_the_widget_shows_the_confirmation_and_the_saved_reason(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    body = (await _page_vote(client, item, "critical", "We run 24/7.", as_json=True)).json()
    assert body["message"] == "Your vote is counted: Critical. Thank you for telling us why."
    html = body["html"]
    assert re.search(r'<p class="vote-done"[^>]*>.*Your vote is counted: Critical\. Thank you for telling us why\.</p>',
                     html)  # on screen, not only in the live region
    assert "Your reason · only the product team reads it We run 24/7." in widget_text(html, item.public_id)
    assert _textarea(html) == "We run 24/7." and 'name="reason_shown" value="1"' in html

    body = (await _page_vote(client, item, "critical", "We run 24/7, in three time zones.", shown=True,
                             as_json=True)).json()
    assert body["message"] == "Your vote is now Critical. Your reason is updated."
    assert "We run 24/7, in three time zones." in widget_text(body["html"], item.public_id)
    assert _reasons(session, item) == ["We run 24/7, in three time zones."]

    token = await csrf_token(client, item.path)
    gone = (await client.post(f"/items/{item.public_id}/unvote", data={"next": item.path, "widget": "page"},
                              headers={"X-CSRF-Token": token, "Accept": "application/json"})).json()
    assert "Your vote is withdrawn." in gone["html"] and "Your reason ·" not in gone["html"]
    # The reason stays with the team, and the box says so: voting again as it is gives it again, emptied takes it back
    assert _textarea(gone["html"]) == "We run 24/7, in three time zones."
    assert "Your reason from before (optional)" in gone["html"] and 'name="reason_shown"' in gone["html"]
    assert _reasons(session, item) == ["We run 24/7, in three time zones."]  # the team keeps what was said


async def test_the_api_keeps_one_reason_per_vote_too(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    headers = {"X-CSRF-Token": await csrf_token(client, "/")}
    for body in ({"importance": "important", "reason": "Audits."}, {"importance": "critical", "reason": "Audits, weekly."},
                 {"importance": "critical"}, {"importance": "critical", "reason": ""}):
        assert (await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers, json=body)).status_code == 200
    assert _reasons(session, item) == ["Audits, weekly."]


def test_the_database_holds_one_reason_per_person_and_item(session):
    item, customer = make_item(session), make_user(session)
    feedback.add_reason(session, item=item, author=customer, body="First")
    session.add(Feedback(kind=FeedbackKind.reason, author_id=customer.id, item_id=item.id, body="Second"))
    with pytest.raises(IntegrityError):
        session.flush()


def test_a_merge_keeps_one_reason_per_person_on_the_item_it_keeps(session):
    a, b, pm = make_item(session, title="A"), make_item(session, title="B"), make_pm(session)
    both, only_b = make_user(session), make_user(session)
    for item, person, text in ((a, both, "On A"), (b, both, "On B"), (b, only_b, "Only on B")):
        voting.cast_vote(session, item=item, user=person, importance=Importance.important)
        feedback.add_reason(session, item=item, author=person, body=text)
    merge = merging.merge_items(session, source=b, target=a, actor=pm)
    assert sorted(_reasons(session, a)) == ["On A", "Only on B"]
    assert _reasons(session, b) == ["On B"]  # stays with B, and comes back with it
    merging.undo_merge(session, merge=merge, actor=pm)
    assert _reasons(session, a) == ["On A"] and sorted(_reasons(session, b)) == ["On B", "Only on B"]
    assert session.scalar(select(func.count()).select_from(Feedback)) == 3


async def test_a_withdrawn_votes_reason_is_marked_so_everywhere_and_can_be_deleted(client, session):
    """Withdrawing keeps the reason for the team, marked as belonging to a withdrawn vote (inbox, person page,
    /me, where its author may delete it); the item page's box shows it, as the reason from before. Voting again with
    the box as shown gives it again; emptied, it is taken back; with other text, the text replaces it. (A
    walk-through: the box was empty after a withdrawal, and voting with it empty brought back a reason the page
    no longer showed.)"""
    item = make_item(session, title="Shift swaps")
    customer = make_user(session, password=None, display_name="Ann Lee")
    sign_in(client, session, customer)
    await _page_vote(client, item, "critical", "Night shifts lose an hour.")
    await post_form(client, f"/items/{item.public_id}/unvote", {"next": item.path, "widget": "page"}, page=item.path)

    page = (await client.get(item.path)).text
    assert "Your vote is withdrawn." in page
    assert "Your reason from before (optional)" in page and "You withdrew your vote" in page
    assert _textarea(page) == "Night shifts lose an hour." and 'name="reason_shown"' in page
    assert "Your reason ·" not in page and "Edit your reason" not in page and ">Vote</button>" in page

    me = (await client.get("/me")).text
    assert re.search(r"Why it matters to you</strong>\s*<span class=\"muted\">\(vote withdrawn\)</span>", me)
    assert "Delete this reason" in me

    client.cookies.clear()
    sign_in(client, session, make_pm(session, password=None))
    inbox = (await client.get("/admin/feedback")).text
    row = re.search(r"Night shifts lose an hour\.(?:</bdi>)?</a></strong>(.*?)</td>", inbox, re.DOTALL)
    assert row and "Vote withdrawn" in row.group(1) and "Voted" not in row.group(1)
    person = (await client.get(f"/admin/people/{customer.id}")).text
    assert re.search(r"Night shifts lose an hour\.(?:</bdi>)?</a>\s*<span class=\"badge\">Reason with a vote</span>\s*"
                     r"<span class=\"badge\">Vote withdrawn</span>", person)

    # Voting again with the box as shown: the reason comes back with the vote, and nothing says withdrawn.
    client.cookies.clear()
    sign_in(client, session, customer)
    await _page_vote(client, item, "important", "Night shifts lose an hour.", shown=True)
    page = (await client.get(item.path)).text
    assert "Your reason · only the product team reads it Night shifts lose an hour." in widget_text(page, item.public_id)
    me = (await client.get("/me")).text
    assert "(vote withdrawn)" not in me and "Delete this reason" in me
    # Withdrawn again and the box emptied: voting takes the reason back.
    await post_form(client, f"/items/{item.public_id}/unvote", {"next": item.path, "widget": "page"}, page=item.path)
    await _page_vote(client, item, "important", "", shown=True)
    page = (await client.get(item.path)).text
    assert _reasons(session, item) == [] and "Your reason ·" not in page and _textarea(page) == ""
    # With text after a withdrawal: the text replaces it (still one reason).
    await post_form(client, f"/items/{item.public_id}/unvote", {"next": item.path, "widget": "page"}, page=item.path)
    await _page_vote(client, item, "important", "Two hours now.")
    assert "Your vote is counted: Important. Thank you for telling us why." in (await client.get(item.path)).text
    assert _reasons(session, item) == ["Two hours now."]

    # Deleted from /me: gone for the team too; the vote stays.
    reason = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert reason is not None
    reason_id = reason.id
    done = await post_form(client, f"/me/reasons/{reason_id}/delete", page="/me")
    assert done.status_code == 303
    me = (await client.get("/me")).text
    assert "Your reason is deleted." in me and "Two hours now." not in me
    assert _reasons(session, item) == []
    assert session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id,
                                                                       Vote.user_id == customer.id)) == 1


async def test_only_the_author_can_delete_a_reason_and_only_with_the_token(client, session):
    item, ann = make_item(session), make_user(session, password=None)
    sign_in(client, session, ann)
    await _page_vote(client, item, "important", "Audits every month.")
    reason = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert reason is not None
    reason_id = reason.id
    assert (await client.post(f"/me/reasons/{reason_id}/delete")).status_code == 403  # no CSRF token
    client.cookies.clear()
    sign_in(client, session, make_user(session, password=None))
    assert (await post_form(client, f"/me/reasons/{reason_id}/delete", page="/me")).status_code == 404
    assert (await post_form(client, "/me/reasons/99999999999/delete", page="/me")).status_code == 404
    assert _reasons(session, item) == ["Audits every month."]


async def test_the_reason_box_counts_instead_of_cutting_a_long_paste(client, session):
    """maxlength=2000 cut a long paste silently; the box carries data-max-chars for the counter, and without
    JavaScript the server refuses the long text with a clear message and keeps it."""
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    page = (await client.get(item.path)).text
    box = re.search(r'<textarea id="f-reason"[^>]*>', page)
    assert box and "maxlength" not in box.group(0) and 'data-max-chars="2000"' in box.group(0)
    long_text = "z" * 2001
    refused = await _page_vote(client, item, "important", long_text)
    assert refused.status_code == 422
    assert "Keep it to 2,000 characters (it has 2,001)" in refused.text and _textarea(refused.text) == long_text
    assert _reasons(session, item) == []
