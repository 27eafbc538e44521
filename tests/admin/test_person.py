"""A customer's page in the staff area: who they are, their votes, ideas and feedback, comments and signed-in
browsers, with moving and disabling there; the people list links to it instead of carrying a form per row."""

from __future__ import annotations

import re

from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.viewer import Viewer
from app.audit.models import AuditEvent
from app.discussion import service as discussion
from app.feedback import service as feedback
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance
from tests.factories import make_admin, make_item, make_pm, make_user
from tests.feedback.helpers import make_customer, make_idea, make_organisation, make_segment
from tests.helpers.http import post_form, sign_in


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#34;", '"').split())


async def test_the_list_links_to_each_person_and_carries_no_forms(client, session):
    dana = make_customer(session, make_organisation(session, "Acme"), display_name="Dana Scully")
    sign_in(client, session, make_pm(session))
    page = (await client.get("/admin/people")).text
    assert f'<a href="/admin/people/{dana.id}">Dana Scully</a>' in page
    assert f"/admin/people/{dana.id}/organisation" not in page and f"/admin/people/{dana.id}/active" not in page
    assert "Disable" not in page and "Customers who have signed in" not in page


async def test_the_list_links_to_the_staff_page_only_for_those_who_may_open_it(client, session):
    sign_in(client, session, make_pm(session))
    page = (await client.get("/admin/people")).text
    assert 'href="/admin/staff"' not in page and "managed by the portal's admins" in page
    assert (await client.get("/admin/staff")).status_code == 404  # what the link would have led a PM to
    sign_in(client, session, make_admin(session))
    assert 'href="/admin/staff"' in (await client.get("/admin/people")).text


async def test_a_person_page_shows_what_they_did(client, session):
    acme = make_organisation(session, "Acme Logistics", segment=make_segment(session, "Enterprise"))
    dana = make_customer(session, acme, display_name="Dana Scully")
    swaps, export = make_item(session, title="Shift swaps"), make_item(session, title="Excel export")
    voting.cast_vote(session, item=swaps, user=dana, importance=Importance.critical)
    feedback.add_reason(session, item=swaps, author=dana, body="Nurses swap daily")
    pm = make_pm(session, display_name="Pat Manager")
    data = feedback.parse_capture_form(session, {"customer": str(dana.id), "importance": "1",
                                                 "source": CaptureSource.call.value, "note": ""})
    feedback.capture_vote(session, item=export, data=data, actor=pm)
    make_idea(session, dana, title="Rota on one A4 page")
    session.flush()
    viewer = Viewer(user=dana, segment_id=acme.segment_id)
    discussion.create_comment(session, viewer=viewer, item=swaps, body="Please let swaps skip the manager")
    accounts.start_session(session, user=dana, user_agent="Firefox on Linux")
    session.flush()
    sign_in(client, session, pm)

    page = _text((await client.get(f"/admin/people/{dana.id}")).text)

    assert "Dana Scully" in page and "Acme Logistics" in page and "Enterprise" in page
    assert "Votes (2)" in page and "Shift swaps Critical" in page
    assert "Excel export Nice to have" in page and "recorded by Pat Manager from call" in page
    assert "Ideas and private feedback (2)" in page and "Rota on one A4 page" in page and "Nurses swap daily" in page
    assert "Comments (1)" in page and "Please let swaps skip the manager" in page
    assert "Signed in now (1)" in page and "Firefox on Linux" in page


async def test_moving_and_disabling_happen_on_the_person_page_and_come_back_to_it(client, session):
    acme, globex = make_organisation(session, "Acme"), make_organisation(session, "Globex")
    dana = make_customer(session, acme, display_name="Dana")
    sign_in(client, session, make_pm(session))
    page = f"/admin/people/{dana.id}"
    assert '<label for="move-' in (await client.get(page)).text

    moved = await post_form(client, f"/admin/people/{dana.id}/organisation",
                            {"organisation_id": str(globex.id), "return_to": page}, page=page)
    assert moved.status_code == 303 and moved.headers["location"] == page
    assert "Dana now belongs to Globex." in (await client.get(page)).text

    disabled = await post_form(client, f"/admin/people/{dana.id}/active", {"active": "0"}, page=page)
    assert disabled.status_code == 303 and disabled.headers["location"] == page  # the default is their page
    after = (await client.get(page)).text
    assert "Dana is disabled and signed out everywhere." in after and ">Enable<" in after.replace(
        '<span class="visually-hidden"> Dana</span>', "")
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == str(dana.id))).all()
    assert "user.moved" in actions and "user.updated" in actions


async def test_only_customers_have_a_person_page_and_only_staff_see_it(client, session):
    dana = make_user(session, display_name="Dana")
    pm = make_pm(session)
    assert (await client.get(f"/admin/people/{dana.id}")).status_code == 303  # sent to sign in
    sign_in(client, session, dana)
    assert (await client.get(f"/admin/people/{dana.id}")).status_code == 404
    sign_in(client, session, pm)
    assert (await client.get(f"/admin/people/{pm.id}")).status_code == 404  # staff are on the staff page
    assert (await client.get("/admin/people/999999")).status_code == 404


async def test_words_people_wrote_are_isolated_so_they_cannot_reverse_the_pages_own_text(client, session):
    """Text stored before the input cleaning, or by a sign-in service, may still carry a bidi override."""
    dana = make_customer(session, make_organisation(session, "Acme"), display_name="Dana \u202eScully")
    swaps = make_item(session, title="Shift swaps")
    voting.cast_vote(session, item=swaps, user=dana, importance=Importance.critical)
    feedback.add_reason(session, item=swaps, author=dana, body="We need it \u202efor payroll")
    discussion.create_comment(session, viewer=Viewer(user=dana), item=swaps, body="Please hurry")
    session.flush()
    sign_in(client, session, make_pm(session))

    page = (await client.get(f"/admin/people/{dana.id}")).text
    for written in ("Dana \u202eScully", "We need it \u202efor payroll", "Please hurry", "Shift swaps"):
        assert re.search(f"<bdi>{re.escape(written)}</bdi>", page), written
    assert "<h1><bdi>Dana \u202eScully</bdi></h1>" in page


async def test_a_return_to_too_long_for_any_address_is_dropped_and_the_move_is_made(client, session):
    """Not a 500: the form goes back to its default page, the person's, as disabling does."""
    acme, globex = make_organisation(session, "Acme"), make_organisation(session, "Globex")
    dana = make_customer(session, acme, display_name="Dana")
    sign_in(client, session, make_pm(session))
    page, too_long = f"/admin/people/{dana.id}", "/admin/" + "a" * 2000

    moved = await post_form(client, f"/admin/people/{dana.id}/organisation",
                            {"organisation_id": str(globex.id), "return_to": too_long}, page=page)
    assert moved.status_code == 303 and moved.headers["location"] == page
    assert "Dana now belongs to Globex." in (await client.get(page)).text

    disabled = await post_form(client, f"/admin/people/{dana.id}/active", {"active": "0", "return_to": too_long},
                               page=page)
    assert disabled.status_code == 303 and disabled.headers["location"] == page
    assert "Dana is disabled and signed out everywhere." in (await client.get(page)).text


async def test_a_refused_move_says_why_whatever_else_was_sent(client, session):
    dana = make_customer(session, make_organisation(session, "Acme"), display_name="Dana")
    sign_in(client, session, make_pm(session))
    page = f"/admin/people/{dana.id}"
    refused = await post_form(client, f"/admin/people/{dana.id}/organisation",
                              {"organisation_id": "twelve", "return_to": "/admin/" + "a" * 2000}, page=page)
    assert refused.status_code == 303 and refused.headers["location"] == page
    assert "Choose an organisation to move them to." in (await client.get(page)).text
