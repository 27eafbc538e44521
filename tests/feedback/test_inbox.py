"""The product team's inbox: every idea and private note, newest first, filtered, and acted upon."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from app.audit.models import AuditEvent
from app.db import utcnow
from app.feedback import service as feedback
from app.feedback.models import FeedbackState
from app.voting.models import CaptureSource, Importance
from tests.factories import make_item, make_pm, make_product, make_user
from tests.feedback.helpers import make_customer, make_idea, make_organisation, make_segment
from tests.helpers.http import post_form, sign_in


def _titles_in_order(text: str, titles: list[str]) -> list[str]:
    return sorted((t for t in titles if t in text), key=text.index)


class TestInbox:
    async def test_customers_and_visitors_cannot_open_it(self, client, session):
        assert (await client.get("/admin/feedback")).status_code == 303  # sent to sign in
        sign_in(client, session, make_customer(session))
        assert (await client.get("/admin/feedback")).status_code == 404

    async def test_everything_newest_first_with_author_organisation_segment_and_source(self, client, session):
        segment = make_segment(session, "Enterprise")
        acme = make_organisation(session, "Acme Logistics", segment=segment)
        dana = make_customer(session, acme, display_name="Dana Scully")
        old = make_idea(session, dana, title="Older idea")
        old.created_at = utcnow() - timedelta(days=3)
        item = make_item(session, title="Shift swaps")
        reason = feedback.add_reason(session, item=item, author=dana, body="Our nurses swap shifts daily")
        assert reason is not None
        reason.created_at = utcnow() - timedelta(days=1)
        pm = make_pm(session, display_name="Pat Manager")
        data = feedback.parse_capture_form(session, {
            "customer": str(dana.id), "importance": "3", "source": "meeting", "note": "Said it in the QBR",
        })
        feedback.capture_vote(session, item=item, data=data, actor=pm)
        session.flush()
        sign_in(client, session, pm)

        page = await client.get("/admin/feedback")

        assert page.status_code == 200
        assert _titles_in_order(page.text, ["Said it in the QBR", "Our nurses swap shifts daily", "Older idea"]) == [
            "Said it in the QBR", "Our nurses swap shifts daily", "Older idea"]
        for text in ("Dana Scully", "Acme Logistics", "Enterprise", "Meeting", "captured by Pat Manager", "Portal",
                     "Shift swaps", "Idea", "Reason with a vote", "Note"):
            assert text in page.text, text

    async def test_filters_by_state_kind_product_and_organisation(self, client, session):
        reports, scheduling = make_product(session, name="Reports"), make_product(session, name="Scheduling")
        acme, globex = make_organisation(session, "Acme"), make_organisation(session, "Globex")
        a, g = make_customer(session, acme), make_customer(session, globex)
        pm = make_pm(session)
        make_idea(session, a, title="Acme reports idea", product=reports)
        declined = make_idea(session, g, title="Globex scheduling idea", product=scheduling)
        feedback.decline(session, feedback=declined, reason="No", actor=pm)
        item = make_item(session, product=scheduling, title="Rota")
        feedback.add_reason(session, item=item, author=a, body="Acme reason on a scheduling item")
        session.flush()
        sign_in(client, session, pm)
        everything = ["Acme reports idea", "Globex scheduling idea", "Acme reason on a scheduling item"]

        async def shown(**params: str) -> set[str]:
            page = await client.get("/admin/feedback", params=params)
            assert page.status_code == 200
            return {t for t in everything if t in page.text}

        assert await shown() == set(everything)
        assert await shown(state="new") == {"Acme reports idea"}
        assert await shown(state="declined") == {"Globex scheduling idea"}
        assert await shown(state="linked") == {"Acme reason on a scheduling item"}
        assert await shown(state="archived") == set()
        assert await shown(kind="reason") == {"Acme reason on a scheduling item"}
        assert await shown(product=str(scheduling.id)) == {"Globex scheduling idea", "Acme reason on a scheduling item"}
        assert await shown(organisation=str(acme.id)) == {"Acme reports idea", "Acme reason on a scheduling item"}
        assert await shown(organisation=str(acme.id), product=str(reports.id)) == {"Acme reports idea"}
        # Nonsense filters are ignored rather than failing.
        assert await shown(state="bogus", product="99999999999999") == set(everything)

    async def test_paging(self, client, session, monkeypatch):
        monkeypatch.setattr(feedback, "INBOX_PER_PAGE", 2)
        customer = make_customer(session)
        for n in range(3):
            make_idea(session, customer, title=f"Idea number {n}").created_at = utcnow() - timedelta(minutes=n)
        session.flush()
        sign_in(client, session, make_pm(session))
        first = await client.get("/admin/feedback")
        second = await client.get("/admin/feedback", params={"page": 2})
        assert "Idea number 0" in first.text and "Idea number 2" not in first.text and "Page 1 of 2" in first.text
        assert "Idea number 2" in second.text and "Idea number 0" not in second.text


class TestActions:
    async def test_link_to_an_item_found_by_search(self, client, session):
        idea = make_idea(session, make_customer(session), title="Swap shifts with a colleague")
        draft = make_item(session, title="Shift marketplace", published=False)
        pm = make_pm(session)
        sign_in(client, session, pm)

        found = await client.get(f"/admin/feedback/{idea.id}", params={"item_q": "marketplace"})
        assert "Shift marketplace" in found.text and f'value="{draft.public_id}"' in found.text  # drafts too

        response = await post_form(client, f"/admin/feedback/{idea.id}/link", {"item": draft.public_id},
                                   page=f"/admin/feedback/{idea.id}")
        assert response.status_code == 303
        session.refresh(idea)
        assert idea.state is FeedbackState.linked and idea.item_id == draft.id
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "feedback.linked"))
        assert event is not None and event.actor_id == pm.id and event.changes["item"] == [None, draft.public_id]

        missing = await post_form(client, f"/admin/feedback/{idea.id}/link", {"item": "nothere1"},
                                  page=f"/admin/feedback/{idea.id}")
        assert missing.status_code == 303
        session.refresh(idea)
        assert idea.item_id == draft.id

    async def test_archive_and_reopen_are_audited(self, client, session):
        idea = make_idea(session, make_customer(session), title="Archive me")
        sign_in(client, session, make_pm(session))
        assert (await post_form(client, f"/admin/feedback/{idea.id}/archive", page="/admin/feedback")).status_code == 303
        session.refresh(idea)
        assert idea.state is FeedbackState.archived
        archived = await client.get("/admin/feedback", params={"state": "archived"})
        assert "Archive me" in archived.text
        assert (await post_form(client, f"/admin/feedback/{idea.id}/reopen", page="/admin/feedback")).status_code == 303
        session.refresh(idea)
        assert idea.state is FeedbackState.new
        actions = list(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_type == "feedback")
                                       .order_by(AuditEvent.id)))
        assert actions == ["feedback.archived", "feedback.reopened"]

    async def test_making_an_item_needs_a_product_and_keeps_the_text(self, client, session):
        idea = make_idea(session, make_customer(session), title="Idea without a product")
        make_product(session)
        make_product(session)
        sign_in(client, session, make_pm(session))
        response = await post_form(client, f"/admin/feedback/{idea.id}/item", {
            "title": "My edited title", "description": "Edited text", "product_id": "", "stage_id": "",
        }, page=f"/admin/feedback/{idea.id}")
        assert response.status_code == 422
        assert "Choose a product." in response.text
        assert 'value="My edited title"' in response.text and "Edited text" in response.text

    async def test_an_idea_is_turned_into_an_item_only_once(self, client, session):
        product = make_product(session)
        idea = make_idea(session, make_customer(session), product=product)
        pm = make_pm(session)
        form = feedback.idea_item_form(session, idea)
        feedback.create_item_from_idea(session, feedback=idea, form=form, actor=pm)
        session.flush()
        sign_in(client, session, pm)
        again = await post_form(client, f"/admin/feedback/{idea.id}/item", form, page=f"/admin/feedback/{idea.id}")
        assert again.status_code == 303 and again.headers["location"] == f"/admin/feedback/{idea.id}"
        page = await client.get(again.headers["location"])
        assert "already linked to an item" in page.text

    async def test_unknown_entries_are_404(self, client, session):
        sign_in(client, session, make_pm(session))
        for path in ("/admin/feedback/999999", "/admin/feedback/99999999999999999", "/admin/feedback/abc"):
            assert (await client.get(path)).status_code == 404, path


def test_captured_note_keeps_who_captured_it(session):
    item, pm, customer = make_item(session), make_pm(session), make_user(session)
    data = feedback.parse_capture_form(session, {"customer": str(customer.id), "importance": str(int(Importance.critical)),
                                                 "source": "ticket", "source_url": "https://support.example/T-1",
                                                 "note": "Blocks their rollout"})
    result = feedback.capture_vote(session, item=item, data=data, actor=pm)
    assert result.note is not None
    [entry] = feedback.list_feedback_for_item(session, item=item)
    assert entry.captured_by.id == pm.id and entry.feedback.source is CaptureSource.ticket
    assert entry.feedback.source_url == "https://support.example/T-1" and entry.source_name == "Support ticket"


async def test_a_reason_shows_the_importance_of_the_vote_it_came_with(client, session):
    from app.voting import service as voting

    dana = make_customer(session, make_organisation(session, "Acme"), display_name="Dana Scully")
    item = make_item(session, title="Shift swaps")
    voting.cast_vote(session, item=item, user=dana, importance=Importance.critical)
    reason = feedback.add_reason(session, item=item, author=dana, body="Our nurses swap shifts daily")
    assert reason is not None
    session.flush()
    sign_in(client, session, make_pm(session))

    inbox = await client.get("/admin/feedback")
    assert "Voted critical" in inbox.text
    detail = await client.get(f"/admin/feedback/{reason.id}")
    assert "Their vote" in detail.text and "Critical" in detail.text

    voting.withdraw_vote(session, item=item, user=dana)
    session.flush()
    assert "Voted critical" not in (await client.get("/admin/feedback")).text
    assert "Withdrawn" in (await client.get(f"/admin/feedback/{reason.id}")).text
