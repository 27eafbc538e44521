"""The admin setting "Hide vote counts from customers": visitors and customers stop seeing counts on cards,
item pages and the API; staff always see them."""

from __future__ import annotations

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.organisations.models import Organisation
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in
from tests.voting.helpers import vote_json, widget_text


async def _hide_counts(client, session, hide: bool = True):  # type: ignore[no-untyped-def]
    sign_in(client, session, make_admin(session, password=None))
    page = (await client.get("/admin/settings")).text
    assert "Hide vote counts from customers" in page
    response = await post_form(client, "/admin/settings/votes", {"hide_counts": "1"} if hide else {},
                               page="/admin/settings")
    assert response.status_code == 303 and response.headers["location"] == "/admin/settings#votes"
    client.cookies.clear()
    return response


async def test_hidden_counts_are_gone_for_customers_and_visitors_but_not_staff(client, session):
    item = make_item(session, title="Shift swaps")
    for _ in range(4):
        voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    await _hide_counts(client, session)

    # A visitor: no count anywhere, still a way to vote.
    assert widget_text((await client.get("/")).text, item.public_id) == "Sign in to vote"
    assert widget_text((await client.get(item.path)).text, item.public_id) == "Votes Sign in to vote"
    listing = (await client.get("/api/v1/items")).json()
    assert listing["items"][0]["vote_count"] is None
    assert (await client.get(f"/api/v1/items/{item.public_id}")).json()["vote_count"] is None

    # A customer of an organisation: votes, sees their own vote, never the count.
    organisation = Organisation(name="Acme")
    session.add(organisation)
    session.flush()
    sign_in(client, session, make_user(session, password=None, organisation_id=organisation.id))
    body = (await vote_json(client, item.public_id, "critical")).json()
    assert body["vote_count"] is None and body["my_vote"] == "critical"
    assert widget_text(body["html"], item.public_id) == "You voted: Critical Change Withdraw"
    page = (await client.get(item.path)).text
    assert widget_text(page, item.public_id).startswith("Votes You voted: Critical How much")
    assert " 5 votes" not in page
    assert (await client.get(f"/api/v1/items/{item.public_id}")).json()["vote_count"] is None

    # Staff: the count, always.
    client.cookies.clear()
    sign_in(client, session, make_pm(session, password=None))
    assert widget_text((await client.get("/")).text, item.public_id).startswith("▲ 5")
    assert widget_text((await client.get(item.path)).text, item.public_id).startswith("Votes 5 votes")
    assert (await client.get(f"/api/v1/items/{item.public_id}")).json()["vote_count"] == 5


async def test_the_setting_is_saved_audited_and_can_be_turned_off(client, session):
    item = make_item(session)
    voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    await _hide_counts(client, session)
    event = session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.votes"))
    assert event is not None and event.changes == {"hide_counts": [False, True]}

    sign_in(client, session, make_admin(session, password=None))
    settings_page = (await client.get("/admin/settings")).text
    assert 'name="hide_counts" value="1" checked' in settings_page
    response = await post_form(client, "/admin/settings/votes", {}, page="/admin/settings")
    follow_up = (await client.get(response.headers["location"])).text
    assert "Everyone sees vote counts again." in follow_up
    client.cookies.clear()
    assert widget_text((await client.get("/")).text, item.public_id) == "▲ 1 Sign in to vote"


async def test_only_admins_change_the_setting(client, session):
    sign_in(client, session, make_pm(session, password=None))
    response = await post_form(client, "/admin/settings/votes", {"hide_counts": "1"}, page="/admin")
    assert response.status_code == 404
