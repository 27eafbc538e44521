"""Staff actions on a comment (pin, unpin, hide, restore) live under /admin only: the item page's staff
buttons post there and come back to the page they were pressed on, at the comment; customers get the staff
area's 404, a signed-out person is sent to sign in, and a post without the CSRF token changes nothing."""

from __future__ import annotations

import pytest

from app.discussion import service as discussion
from app.discussion.models import Comment
from tests.discussion.helpers import comment, many_comments, press_staff_button
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import csrf_token, post_form, sign_in

ACTIONS = ("pin", "unpin", "hide", "restore")


def state(session, c: Comment) -> tuple[bool, bool]:  # type: ignore[no-untyped-def]
    session.expire_all()
    fresh = session.get(Comment, c.id)
    return fresh.is_pinned, fresh.hidden_at is not None


def ready_for(session, action: str):  # type: ignore[no-untyped-def]
    """An item with an official comment in the state where `action` changes something, and its staff author."""
    item, pm = make_item(session), make_pm(session)
    answer = comment(session, item, pm, "Official answer")
    if action == "unpin":
        discussion.pin_comment(session, actor=pm, comment=answer)
    if action == "restore":
        discussion.hide_comment(session, actor=pm, comment=answer)
    return item, pm, answer


@pytest.mark.parametrize("action", ACTIONS)
async def test_staff_press_the_button_on_the_item_page_and_land_back_at_the_comment(client, session, action):
    item, pm, answer = ready_for(session, action)
    before = state(session, answer)
    sign_in(client, session, pm)
    done = await press_staff_button(client, item.path, answer, action)
    assert done.status_code == 303
    assert done.headers["location"] == f"{item.path}#comment-{answer.public_id}"
    after = state(session, answer)
    assert after != before
    assert after == {"pin": (True, False), "unpin": (False, False), "hide": (False, True),
                     "restore": (False, False)}[action]


async def test_a_button_on_the_second_page_of_comments_comes_back_to_the_second_page(client, session):
    item, pm = make_item(session), make_pm(session)
    rows = many_comments(session, item, make_user(session), discussion.PAGE_SIZE + 2)
    sign_in(client, session, pm)
    page_two = f"{item.path}?page=2"
    hidden = await press_staff_button(client, page_two, rows[-1], "hide")
    assert hidden.headers["location"] == f"{page_two}#comment-{rows[-1].public_id}"
    assert state(session, rows[-1]) == (False, True)


@pytest.mark.parametrize("return_to", ["https://evil.example/phish", "//evil.example/phish", "/\\evil.example",
                                       "javascript:alert(1)", ""])
async def test_only_a_path_of_this_site_is_returned_to(client, session, return_to):
    item, pm, answer = ready_for(session, "hide")
    sign_in(client, session, pm)
    done = await post_form(client, f"/admin/moderation/{answer.public_id}/hide", {"return_to": return_to},
                           page=item.path)
    assert done.status_code == 303 and done.headers["location"] == "/admin/moderation"
    assert state(session, answer) == (False, True)


@pytest.mark.parametrize("action", ACTIONS)
async def test_customers_get_the_staff_areas_404_and_change_nothing(client, session, action):
    item, _pm, answer = ready_for(session, action)
    before = state(session, answer)
    sign_in(client, session, make_user(session))
    assert f"/admin/moderation/{answer.public_id}/" not in (await client.get(item.path)).text
    refused = await post_form(client, f"/admin/moderation/{answer.public_id}/{action}",
                              {"return_to": item.path}, page=item.path)
    assert refused.status_code == 404
    assert state(session, answer) == before


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_signed_out_person_is_sent_to_sign_in_and_changes_nothing(client, session, action):
    item, _pm, answer = ready_for(session, action)
    before = state(session, answer)
    refused = await post_form(client, f"/admin/moderation/{answer.public_id}/{action}", {}, page=item.path)
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login")
    assert state(session, answer) == before


@pytest.mark.parametrize("action", ACTIONS)
async def test_without_the_csrf_token_staff_change_nothing(client, session, action):
    item, pm, answer = ready_for(session, action)
    before = state(session, answer)
    sign_in(client, session, pm)
    await csrf_token(client, item.path)  # the cookie is there; the form field is not
    for data in ({}, {"csrf_token": "forged"}):
        refused = await client.post(f"/admin/moderation/{answer.public_id}/{action}",
                                    data={**data, "return_to": item.path})
        assert refused.status_code == 403
    assert state(session, answer) == before


@pytest.mark.parametrize("action", ACTIONS)
async def test_the_old_public_addresses_are_gone(client, session, action):
    item, pm, answer = ready_for(session, action)
    before = state(session, answer)
    sign_in(client, session, pm)
    gone = await post_form(client, f"/comments/{answer.public_id}/{action}", {}, page=item.path)
    assert gone.status_code in (404, 405)
    assert state(session, answer) == before
