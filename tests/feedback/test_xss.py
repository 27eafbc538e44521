"""Classic stored-XSS payloads in ideas, reasons and captured notes come out inert wherever they show."""

from __future__ import annotations

import pytest

from app.feedback import service as feedback
from tests.factories import make_item, make_pm
from tests.feedback.helpers import XSS_PAYLOADS, make_customer, make_idea, make_organisation
from tests.feedback.inert import assert_inert
from tests.helpers.http import post_form, sign_in


@pytest.mark.parametrize("payload", XSS_PAYLOADS)
async def test_payloads_are_inert_in_the_inbox_on_the_detail_page_and_on_me(client, session, payload):
    organisation = make_organisation(session, name=f"Org {payload}"[:120])
    customer = make_customer(session, organisation, display_name=payload[:120])
    sign_in(client, session, customer)
    response = await post_form(client, "/ideas", {"title": payload[:200], "body": f"Body {payload}",
                                                  "action": "submit"}, page="/ideas/new")
    assert response.status_code == 303
    item = make_item(session, title="Plain item")
    feedback.add_reason(session, item=item, author=customer, body=f"Reason {payload}")
    pm = make_pm(session)
    data = feedback.parse_capture_form(session, {"customer": str(customer.id), "importance": "2", "source": "call",
                                                 "note": f"Note {payload}"})
    feedback.capture_vote(session, item=item, data=data, actor=pm)
    session.flush()

    me = await client.get("/me")
    assert me.status_code == 200
    assert_inert(me.text)
    assert payload[:200] not in me.text or "<" not in payload  # shown escaped, not as markup

    # The similar-items fragment repeats what is typed in the title nowhere but the highlight.
    similar = await client.get("/ideas/similar", params={"q": payload[:200]})
    assert_inert(similar.text)
    checked = await post_form(client, "/ideas", {"title": payload[:200], "body": payload, "action": "check"},
                              page="/ideas/new")
    assert_inert(checked.text)

    sign_in(client, session, pm)
    inbox = await client.get("/admin/feedback")
    assert inbox.status_code == 200
    assert_inert(inbox.text)
    [idea] = [e for e in feedback.list_inbox(session, filters=feedback.InboxFilters())[0] if e.feedback.kind.value == "idea"]
    detail = await client.get(f"/admin/feedback/{idea.feedback.id}")
    assert detail.status_code == 200
    assert_inert(detail.text)
    capture = await client.get(f"/admin/items/{item.public_id}/capture", params={"customer_q": customer.email})
    assert_inert(capture.text)


async def test_the_checker_catches_live_markup():
    for html in ("<p><img src=x onerror=alert(1)></p>", "<script>alert(1)</script>", '<a href="javascript:x">x</a>'):
        with pytest.raises(AssertionError):
            assert_inert(html)


async def test_payload_in_a_decline_reason_is_inert_on_me(client, session):
    customer = make_customer(session)
    idea = make_idea(session, customer, title="An idea")
    feedback.decline(session, feedback=idea, reason=XSS_PAYLOADS[1], actor=make_pm(session))
    session.flush()
    sign_in(client, session, customer)
    me = await client.get("/me")
    assert "&lt;img src=x onerror=alert(1)&gt;" in me.text
    assert_inert(me.text)
