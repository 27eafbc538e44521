"""Votes a PM records on a customer's behalf: they count like any vote, show who captured them, become
the customer's when a placeholder contact signs in, and can be withdrawn by the customer."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select, update

from app.accounts import service as accounts
from app.accounts.models import IdentityKind, User
from app.audit.models import AuditEvent
from app.errors import Conflict
from app.feedback import service as feedback
from app.feedback.models import Feedback
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance, Vote
from tests.factories import make_item, make_pm, make_user, stage
from tests.feedback.helpers import make_customer, make_organisation
from tests.helpers.http import post_form, sign_in


def _votes(session, item):  # type: ignore[no-untyped-def]
    return list(session.scalars(select(Vote).where(Vote.item_id == item.id)))


async def _capture(client, item, **data):  # type: ignore[no-untyped-def]
    fields = {"importance": "2", "source": "call", **data}
    return await post_form(client, f"/admin/items/{item.public_id}/capture", fields,
                           page=f"/admin/items/{item.public_id}/capture")


class TestPlaceholder:
    async def test_contact_without_account_signs_in_later_sees_the_vote_and_withdraws_it(self, client, session):
        acme = make_organisation(session, "Acme Logistics")
        item = make_item(session, title="Shift swaps")
        pm = make_pm(session, display_name="Pat Manager")
        sign_in(client, session, pm)

        edit = await client.get(f"/admin/items/{item.public_id}")
        assert f'href="/admin/items/{item.public_id}/capture"' in edit.text
        form = await client.get(f"/admin/items/{item.public_id}/capture")
        assert form.status_code == 200 and "Acme Logistics" in form.text

        response = await _capture(client, item, customer="contact", contact_name="Robin Hale",
                                  contact_email="Robin@Acme.example", organisation_id=str(acme.id),
                                  importance="3", source="call", source_url="https://crm.example/calls/42")
        assert response.status_code == 303
        placeholder = accounts.get_user_by_email(session, "robin@acme.example")
        assert placeholder is not None and placeholder.is_placeholder
        assert (placeholder.organisation_id, placeholder.display_name, placeholder.password_hash) == (
            acme.id, "Robin Hale", None)
        [vote] = _votes(session, item)
        assert (vote.user_id, vote.importance, vote.captured_by_id, vote.source, vote.source_url) == (
            placeholder.id, Importance.critical, pm.id, CaptureSource.call, "https://crm.example/calls/42")
        session.refresh(item)
        assert item.vote_count == 1
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "vote.captured")) is not None

        # Robin signs in with a sign-in link to that address: the placeholder becomes their account.
        user = accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
            kind=IdentityKind.email, issuer="email", subject="robin@acme.example", email="robin@acme.example",
            email_verified=True))
        assert user.id == placeholder.id and not user.is_placeholder and user.organisation_id == acme.id
        client.cookies.clear()
        sign_in(client, session, user)

        me = await client.get("/me")
        assert "Votes the team recorded for you" in me.text
        assert "Recorded by Pat Manager from a call" in me.text
        assert f'<a href="{item.path}">Shift swaps</a>' in me.text and "Critical" in me.text
        assert "crm.example" not in me.text  # the team's own link stays with the team

        withdraw = await post_form(client, f"/me/recorded-votes/{vote.id}/withdraw", page="/me")
        assert withdraw.status_code == 303 and withdraw.headers["location"] == "/me#recorded-votes"
        assert _votes(session, item) == []
        session.refresh(item)
        assert item.vote_count == 0
        me = await client.get("/me")
        assert "Your vote for “Shift swaps” is withdrawn." in me.text
        assert "Votes the team recorded for you" not in me.text

    async def test_an_unverified_sign_in_cannot_claim_a_placeholder(self, session):
        acme = make_organisation(session)
        pm = make_pm(session)
        data = feedback.parse_capture_form(session, {"customer": "contact", "contact_name": "Kim",
                                                     "contact_email": "kim@acme.example",
                                                     "organisation_id": str(acme.id), "importance": "2",
                                                     "source": "email"})
        feedback.capture_vote(session, item=make_item(session), data=data, actor=pm)
        import pytest

        with pytest.raises(accounts.SignInFailed):
            accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
                kind=IdentityKind.oidc, issuer="https://id.example", subject="kim", email="kim@acme.example",
                email_verified=False))
        assert accounts.get_user_by_email(session, "kim@acme.example").is_placeholder

    async def test_a_known_address_uses_the_existing_account(self, client, session):
        acme = make_organisation(session)
        existing = make_customer(session, acme, email="lee@acme.example")
        item = make_item(session)
        sign_in(client, session, make_pm(session))
        response = await _capture(client, item, customer="contact", contact_name="Lee", contact_email="lee@acme.example",
                                  organisation_id=str(acme.id))
        assert response.status_code == 303
        assert [v.user_id for v in _votes(session, item)] == [existing.id]
        assert session.scalar(select(func.count()).select_from(User).where(User.is_placeholder.is_(True))) == 0


class TestCounting:
    async def test_customer_who_voted_keeps_their_own_vote_and_reason(self, client, session):
        customer = make_customer(session, make_organisation(session), email="dana@acme.example")
        item = make_item(session)
        voting.cast_vote(session, item=item, user=customer, importance=Importance.nice_to_have)
        feedback.save_reason(session, item=item, author=customer, body="Our night shift needs it")
        sign_in(client, session, make_pm(session))

        found = await client.get(f"/admin/items/{item.public_id}/capture", params={"customer_q": "dana@acme"})
        # The address may break after its "@" on a phone, not mid-word ("harbourhealth.exa / mple").
        assert "dana@<wbr>acme.example" in found.text and f'value="{customer.id}" checked' in found.text

        response = await _capture(client, item, customer=str(customer.id), importance="3", note="Mentioned it again")
        assert response.status_code == 409
        assert "already voted on this item themselves (Nice to have): their own vote and reason stand" in (
            response.text)
        assert "Mentioned it again" in response.text  # what the PM typed is still in the form
        [vote] = _votes(session, item)
        assert vote.importance == Importance.nice_to_have and vote.captured_by_id is None  # still their own vote
        assert list(session.scalars(select(Feedback.body).where(Feedback.item_id == item.id))) == [
            "Our night shift needs it"]
        demand = await client.get(f"/admin/desk/items/{item.public_id}")
        assert "Our night shift needs it" in demand.text and "Mentioned it again" not in demand.text

    async def test_a_lower_captured_vote_is_raised(self, session):
        customer, item, pm = make_user(session), make_item(session), make_pm(session)
        voting.cast_vote(session, item=item, user=customer, importance=Importance.nice_to_have, captured_by=pm)
        data = feedback.parse_capture_form(session, {"customer": str(customer.id), "importance": "3", "source": "call"})
        result = feedback.capture_vote(session, item=item, data=data, actor=pm)
        assert result.importance is Importance.critical and not result.vote_created
        session.refresh(item)
        assert item.vote_count == 1

    async def test_released_items_take_no_captured_votes(self, client, session):
        customer = make_user(session)
        item = make_item(session, stage_slug="released")
        sign_in(client, session, make_pm(session))
        page = await client.get(f"/admin/items/{item.public_id}/capture")
        assert "Released — voting is closed. This item takes no votes." in page.text
        response = await _capture(client, item, customer=str(customer.id))
        assert response.status_code == 409 and "takes no votes" in response.text
        assert _votes(session, item) == []


class TestValidation:
    async def test_mistakes_are_named_and_what_was_typed_stays(self, client, session):
        item = make_item(session)
        sign_in(client, session, make_pm(session))
        response = await _capture(client, item, customer="contact", contact_name="Sam Example",
                                  contact_email="not-an-email", organisation_id="", importance="7", source="fax",
                                  source_url="javascript:alert(1)", note="Typed carefully")
        assert response.status_code == 422
        for message in ("Enter a valid email address", "Choose the contact", "Choose how much it matters",
                        "Choose where this came from", "Enter a web address starting with https://"):
            assert message in response.text, message
        assert 'value="Sam Example"' in response.text and 'value="not-an-email"' in response.text
        assert "Typed carefully" in response.text
        assert _votes(session, item) == []

    async def test_nobody_chosen(self, client, session):
        item = make_item(session)
        sign_in(client, session, make_pm(session))
        response = await _capture(client, item)
        assert response.status_code == 422 and "Choose a customer from the search, or a new contact." in response.text

    async def test_staff_addresses_are_not_customers(self, client, session):
        acme = make_organisation(session)
        pm = make_pm(session, email="pat@vendor.example")
        item = make_item(session)
        sign_in(client, session, pm)
        response = await _capture(client, item, customer="contact", contact_name="Pat",
                                  contact_email="pat@vendor.example", organisation_id=str(acme.id))
        assert response.status_code == 422 and "belongs to a staff account" in response.text
        response = await _capture(client, item, customer=str(pm.id))
        assert response.status_code == 422


class TestWithdraw:
    async def test_nobody_else_can_withdraw_my_recorded_vote(self, client, session):
        owner, other, item, pm = make_user(session), make_user(session), make_item(session), make_pm(session)
        data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "2", "source": "call"})
        feedback.capture_vote(session, item=item, data=data, actor=pm)
        [vote] = _votes(session, item)
        sign_in(client, session, other)
        response = await post_form(client, f"/me/recorded-votes/{vote.id}/withdraw", page="/me")
        assert response.status_code == 404
        assert (await post_form(client, "/me/recorded-votes/99999999999999/withdraw", page="/me")).status_code == 404
        assert len(_votes(session, item)) == 1

    async def test_a_vote_on_an_unpublished_item_shows_no_title_and_can_be_withdrawn(self, client, session):
        owner, pm = make_user(session), make_pm(session)
        draft = make_item(session, title="Secret project", published=False)
        data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "2", "source": "meeting"})
        feedback.capture_vote(session, item=draft, data=data, actor=pm)
        sign_in(client, session, owner)
        me = await client.get("/me")
        assert "An item the team has not published yet" in me.text and "Secret project" not in me.text
        assert "from a meeting" in me.text
        [vote] = _votes(session, draft)
        response = await post_form(client, f"/me/recorded-votes/{vote.id}/withdraw", page="/me")
        assert response.status_code == 303 and _votes(session, draft) == []
        assert "Secret project" not in (await client.get("/me")).text


async def test_a_recorded_vote_on_an_item_that_shipped_stays_as_it_was(client, session):
    owner, pm = make_user(session), make_pm(session)
    item = make_item(session, title="Shipped thing")
    data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "2", "source": "call"})
    feedback.capture_vote(session, item=item, data=data, actor=pm)

    item.stage_id = stage(session, "released").id
    session.flush()
    sign_in(client, session, owner)
    me = await client.get("/me")
    assert "Released — voting is closed: the vote stays as it was." in me.text
    [vote] = _votes(session, item)
    assert f"/me/recorded-votes/{vote.id}/withdraw" not in me.text
    response = await post_form(client, f"/me/recorded-votes/{vote.id}/withdraw", page="/me")
    assert response.status_code == 409 and len(_votes(session, item)) == 1


async def test_the_customer_search_says_how_many_it_shows_of_how_many_match(client, session):
    acme = make_organisation(session, "Acme Logistics")
    for n in range(24):
        make_customer(session, acme, email=f"dana{n:02d}@acme.example", display_name=f"Dana {n:02d}")
    item = make_item(session, title="Shift swaps")
    sign_in(client, session, make_pm(session))

    many = await client.get(f"/admin/items/{item.public_id}/capture", params={"customer_q": "dana"})
    assert "10 of 24 shown — refine the search" in many.text
    assert many.text.count('name="customer" value="') - 1 == feedback.CUSTOMERS_SHOWN  # and the new contact
    assert "dana00@<wbr>acme.example" in many.text and "Acme Logistics" in many.text

    one = await client.get(f"/admin/items/{item.public_id}/capture", params={"customer_q": "dana07"})
    assert "1 customer matches “dana07”." in one.text and "shown —" not in one.text


class TestClosedMeanwhile:
    """The capture form was read with the item open; by the time the vote is written another transaction has
    released, declined or merged it. The rules are checked on the item's row once it is locked, as a person's
    own vote is (app/voting/commands.py), so the vote is refused and nothing is written."""

    @staticmethod
    def _changed_by_another_transaction(session, item, **values):  # type: ignore[no-untyped-def]
        # Straight to the row, past the session's copy of the item: what this session holds is what it read
        # before the other transaction committed.
        session.connection().execute(update(Item.__table__).where(Item.__table__.c.id == item.id).values(**values))

    async def test_a_vote_captured_on_an_item_closed_meanwhile_is_refused(self, client, session):
        for slug, reason in (("released", "Released — voting is closed"), ("declined", "Declined — voting is closed")):
            owner, pm = make_user(session), make_pm(session)
            item = roadmap.get_item_for_staff(session, make_item(session, title=f"Closing {slug}").public_id)
            data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "3",
                                                         "source": "call", "note": "They asked twice."})
            assert item.stage.slug == "planned"  # as the capture page read it
            self._changed_by_another_transaction(session, item, stage_id=stage(session, slug).id)
            with pytest.raises(Conflict) as refused:
                feedback.capture_vote(session, item=item, data=data, actor=pm)
            assert refused.value.detail == f"{reason}. This item takes no votes."
            assert _votes(session, item) == []
            assert session.scalar(select(func.count()).select_from(Feedback).where(Feedback.item_id == item.id)) == 0

    async def test_a_vote_captured_on_an_item_merged_meanwhile_is_refused(self, client, session):
        owner, pm = make_user(session), make_pm(session)
        item, target = make_item(session, title="Merged away"), make_item(session, title="Kept")
        data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "2", "source": "call"})
        self._changed_by_another_transaction(session, item, merged_into_id=target.id)
        with pytest.raises(Conflict) as refused:
            feedback.capture_vote(session, item=item, data=data, actor=pm)
        assert refused.value.detail == "Merged into another item — voting is closed. This item takes no votes."
        assert _votes(session, item) == _votes(session, target) == []

    async def test_the_capture_form_says_so_and_keeps_what_was_typed(self, client, session):
        owner, pm = make_user(session, display_name="Dana Customer"), make_pm(session)
        item = make_item(session, title="Shift swaps")
        sign_in(client, session, pm)
        await client.get(f"/admin/items/{item.public_id}/capture")
        item.stage_id = stage(session, "released").id
        session.flush()
        response = await _capture(client, item, customer=str(owner.id), note="Needs it for the night shift.")
        assert response.status_code == 409
        assert "Released — voting is closed. This item takes no votes." in response.text
        assert "Needs it for the night shift." in response.text
        assert _votes(session, item) == []


async def test_a_captured_note_whose_vote_was_withdrawn_says_so(client, session):
    """A note the team captured with a vote keeps its place in the inbox and on the person's page after the
    customer withdraws that vote, marked "Vote withdrawn" as a withdrawn vote's own reason is (it used to
    lose its importance badge with nothing in its place)."""
    owner, pm = make_user(session, display_name="Dana Customer"), make_pm(session)
    item = make_item(session, title="Shift swaps")
    data = feedback.parse_capture_form(session, {"customer": str(owner.id), "importance": "3", "source": "call",
                                                 "note": "Their night team swaps shifts on paper."})
    note = feedback.capture_vote(session, item=item, data=data, actor=pm).note
    assert note is not None

    def row(page: str) -> str:
        found = re.search(r"Their night team swaps shifts on paper\.(?:</bdi>)?</a>(.*?)</(?:td|li)>", page, re.DOTALL)
        assert found, page[:300]
        return found.group(1)

    sign_in(client, session, pm)
    assert "Voted critical" in row((await client.get("/admin/feedback")).text)
    assert "Vote withdrawn" not in row((await client.get(f"/admin/people/{owner.id}")).text)

    [vote] = _votes(session, item)
    client.cookies.clear()
    sign_in(client, session, owner)
    assert (await post_form(client, f"/me/recorded-votes/{vote.id}/withdraw", page="/me")).status_code == 303

    client.cookies.clear()
    sign_in(client, session, pm)
    for page in ("/admin/feedback", f"/admin/people/{owner.id}"):
        shown = row((await client.get(page)).text)
        assert '<span class="badge">Vote withdrawn</span>' in shown and "Voted" not in shown, page
    detail = (await client.get(f"/admin/feedback/{note.id}")).text
    assert re.search(r"<dt>Their vote</dt><dd class=\"muted\">Withdrawn</dd>", detail)
