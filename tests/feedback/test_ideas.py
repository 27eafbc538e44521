"""Customers submit ideas: they reach the team's inbox and never the public board; similar items the
customer may see are suggested; /me says what became of each idea."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from app.feedback import service as feedback
from app.feedback.models import Feedback, FeedbackKind, FeedbackState
from app.portal import service as portal
from app.roadmap.models import Visibility
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_admin, make_item, make_pm, make_product, make_user
from tests.feedback.helpers import make_customer, make_idea, make_organisation, make_segment
from tests.helpers.http import post_form, sign_in


def _ideas(session):  # type: ignore[no-untyped-def]
    return list(session.scalars(select(Feedback).where(Feedback.kind == FeedbackKind.idea)))


class TestSubmit:
    async def test_signed_out_people_are_asked_to_sign_in_and_come_back(self, client):
        response = await client.get("/ideas/new")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/ideas/new"

    async def test_idea_lands_in_the_inbox_and_nowhere_public(self, client, session):
        product = make_product(session, name="Scheduling")
        make_item(session, product=product, title="Shift swaps", stage_slug="released")
        customer = make_customer(session, make_organisation(session), display_name="Dana Scully")
        sign_in(client, session, customer)

        form = await client.get("/ideas/new")
        assert form.status_code == 200
        assert "Suggest an idea" in form.text and "Scheduling" in form.text

        response = await post_form(client, "/ideas", {
            "title": "Quokka roster export", "body": "We print rosters every **Monday**.",
            "product_id": str(product.id), "action": "submit",
        }, page="/ideas/new")

        assert response.status_code == 303
        assert response.headers["location"] == "/me#your-feedback"
        [idea] = _ideas(session)
        assert (idea.title, idea.state, idea.author_id, idea.organisation_id, idea.product_id) == (
            "Quokka roster export", FeedbackState.new, customer.id, customer.organisation_id, product.id)
        me = await client.get("/me")
        assert "Quokka roster export" in me.text and "Received" in me.text
        assert "Your idea has reached the product team" in me.text

        for path in ("/", "/?view=horizon", "/search?q=quokka", "/changelog", "/changelog.atom", "/api/v1/items",
                     "/sitemap.xml"):
            page = await client.get(path)
            assert page.status_code == 200, path
            assert "Quokka" not in page.text and "quokka roster" not in page.text.lower(), path

        sign_in(client, session, make_pm(session))
        inbox = await client.get("/admin/feedback")
        assert inbox.status_code == 200
        assert "Quokka roster export" in inbox.text and "Dana Scully" in inbox.text and "Acme Logistics" in inbox.text

    async def test_empty_title_is_refused_and_the_text_stays(self, client, session):
        sign_in(client, session, make_customer(session))
        response = await post_form(client, "/ideas", {"title": "  ", "body": "My carefully written reasons",
                                                      "action": "submit"}, page="/ideas/new")
        assert response.status_code == 422
        assert "Give your idea a short title." in response.text
        assert "My carefully written reasons" in response.text
        assert _ideas(session) == []

    async def test_over_long_text_is_refused_and_the_text_stays(self, client, session):
        sign_in(client, session, make_customer(session))
        title = "Long title " + "x" * 200
        body = "y" * (feedback.MAX_BODY + 1)
        response = await post_form(client, "/ideas", {"title": title, "body": body, "action": "submit"},
                                   page="/ideas/new")
        assert response.status_code == 422
        assert f"Keep it to 200 characters (it has {len(title)})." in response.text
        assert f"Keep it to {feedback.MAX_BODY:,} characters" in response.text
        assert f'value="{title}"' in response.text and body in response.text
        assert _ideas(session) == []

    async def test_the_description_box_counts_instead_of_cutting_a_long_paste(self, client, session):
        sign_in(client, session, make_customer(session))
        page = (await client.get("/ideas/new")).text
        box = re.search(r'<textarea id="f-body"[^>]*>', page)
        assert box and "maxlength" not in box.group(0) and f'data-max-chars="{feedback.MAX_BODY}"' in box.group(0)

    async def test_unknown_product_is_refused(self, client, session):
        sign_in(client, session, make_customer(session))
        response = await post_form(client, "/ideas", {"title": "Fine", "product_id": "99999999999999999999",
                                                      "action": "submit"}, page="/ideas/new")
        assert response.status_code == 422
        assert "That product no longer exists" in response.text and 'value="Fine"' in response.text


class TestRateLimit:
    async def test_too_many_ideas_from_one_person_get_a_readable_429_with_the_text_kept(self, client, session, app):
        app.state.settings.idea_rate_limit = "2/day"
        sign_in(client, session, make_customer(session))
        for n in range(2):
            response = await post_form(client, "/ideas", {"title": f"Idea {n}", "action": "submit"}, page="/ideas/new")
            assert response.status_code == 303
        response = await post_form(client, "/ideas", {"title": "The third idea", "body": "Still here?",
                                                      "action": "submit"}, page="/ideas/new")
        assert response.status_code == 429
        assert int(response.headers["retry-after"]) > 0
        assert "You have sent several ideas in a short time" in response.text
        assert 'value="The third idea"' in response.text and "Still here?" in response.text
        assert len(_ideas(session)) == 2

    async def test_one_address_is_limited_across_people(self, client, session, app):
        app.state.settings.idea_rate_limit = "100/day"
        app.state.settings.idea_ip_rate_limit = "2/day"
        organisation = make_organisation(session)
        for n in range(2):
            sign_in(client, session, make_customer(session, organisation))
            response = await post_form(client, "/ideas", {"title": f"Idea {n}", "action": "submit"}, page="/ideas/new")
            assert response.status_code == 303
        sign_in(client, session, make_customer(session, organisation))
        response = await post_form(client, "/ideas", {"title": "From a colleague", "action": "submit"},
                                   page="/ideas/new")
        assert response.status_code == 429

    async def test_json_clients_get_the_limit_too(self, client, session, app):
        # The form answers HTML; the limiter itself is shared with every other client of the same key.
        app.state.settings.idea_rate_limit = "1/day"
        sign_in(client, session, make_customer(session))
        assert (await post_form(client, "/ideas", {"title": "One", "action": "submit"}, page="/ideas/new")).status_code == 303
        second = await post_form(client, "/ideas", {"title": "Two", "action": "submit"}, page="/ideas/new")
        assert second.status_code == 429 and "text/html" in second.headers["content-type"]


class TestSimilar:
    def _items(self, session):  # type: ignore[no-untyped-def]
        product = make_product(session, name="Scheduling")
        segment = make_segment(session)
        public = make_item(session, product=product, title="Shift swap approvals")
        customers = make_item(session, product=product, title="Shift swap for customers",
                              visibility=Visibility.customers)
        internal = make_item(session, product=product, title="Shift swap internal rework",
                             visibility=Visibility.internal)
        draft = make_item(session, product=product, title="Shift swap draft", published=False)
        return segment, public, customers, internal, draft

    async def test_suggestions_only_show_items_the_customer_may_see(self, client, session):
        _, public, customers, internal, draft = self._items(session)
        sign_in(client, session, make_customer(session))  # signed in, no organisation: visitor-level

        response = await client.get("/ideas/similar", params={"q": "shift swap"})

        assert response.status_code == 200
        assert public.path in response.text and "<mark>Shift</mark> <mark>swap</mark> approvals" in response.text
        for hidden in (customers, internal, draft):
            assert hidden.path not in response.text and hidden.title.split(maxsplit=2)[-1] not in response.text

        as_json = await client.get("/ideas/similar", params={"q": "swap shift"}, headers={"accept": "application/json"})
        assert [s["url"] for s in as_json.json()] == [public.path]

    async def test_customers_of_an_organisation_also_see_customer_items(self, client, session):
        _, public, customers, _, _ = self._items(session)
        sign_in(client, session, make_customer(session, make_organisation(session)))
        response = await client.get("/ideas/similar", params={"q": "shift swap", "format": "json"},
                                    headers={"accept": "application/json"})
        urls = {s["url"] for s in response.json()}
        assert urls == {public.path, customers.path}

    async def test_visitors_get_public_items_only(self, client, session):
        _, public, _, _, _ = self._items(session)
        response = await client.get("/ideas/similar", params={"q": "swap"}, headers={"accept": "application/json"})
        assert [s["url"] for s in response.json()] == [public.path]

    async def test_vote_counts_are_left_out_when_the_portal_hides_them_but_not_for_staff(self, client, session):
        item = make_item(session, title="Shift swap approvals")
        for _ in range(3):
            voting.cast_vote(session, item=item, user=make_user(session, password=None),
                             importance=Importance.important)

        async def votes():  # type: ignore[no-untyped-def]
            response = await client.get("/ideas/similar", params={"q": "shift swap"},
                                        headers={"accept": "application/json"})
            return [(s["url"], s["votes"]) for s in response.json()]

        sign_in(client, session, make_customer(session))
        assert await votes() == [(item.path, 3)]

        portal.update_vote_display(session, actor=make_admin(session, password=None), hide_counts=True)
        assert await votes() == [(item.path, None)]
        client.cookies.clear()
        assert await votes() == [(item.path, None)]  # a visitor
        sign_in(client, session, make_pm(session))
        assert await votes() == [(item.path, 3)]

    async def test_with_counts_hidden_the_order_of_equal_matches_does_not_give_them_away(self, client, session):
        first, second = make_item(session, title="Shift swap approvals"), make_item(session, title="Shift swap rules")

        async def order():  # type: ignore[no-untyped-def]
            response = await client.get("/ideas/similar", params={"q": "shift swap"},
                                        headers={"accept": "application/json"})
            return [s["url"] for s in response.json()]

        def votes(item, n):  # type: ignore[no-untyped-def]
            for _ in range(n):
                voting.cast_vote(session, item=item, user=make_user(session, password=None),
                                 importance=Importance.important)

        votes(second, 2)
        assert await order() == [second.path, first.path]  # shown: the more voted first
        portal.update_vote_display(session, actor=make_admin(session, password=None), hide_counts=True)
        hidden = await order()
        votes(first, 4)
        assert await order() == hidden  # hidden: more votes for the other one changes nothing

    async def test_partial_matches_are_suggested_best_first_and_a_one_word_overlap_is_not(self, session):
        product = make_product(session)
        both = make_item(session, product=product, title="Export rosters to Excel")
        most = make_item(session, product=product, title="Export timesheets to Excel")
        make_item(session, product=product, title="Print rosters")  # one word of three: not similar
        make_item(session, product=product, title="Unrelated thing")
        from app.accounts.viewer import ANONYMOUS

        found = feedback.similar_items(session, ANONYMOUS, title="Can we export the rosters to Excel please")
        assert [s.item.id for s in found] == [both.id, most.id]
        assert feedback.similar_items(session, ANONYMOUS, title="the a of") == []

    async def test_without_javascript_the_check_button_shows_them_and_keeps_the_text(self, client, session):
        _, public, customers, _, _ = self._items(session)
        sign_in(client, session, make_customer(session))
        response = await post_form(client, "/ideas", {"title": "Shift swap by text", "body": "Details I typed",
                                                      "action": "check"}, page="/ideas/new")
        assert response.status_code == 200
        assert "Already on the roadmap?" in response.text and public.path in response.text
        assert customers.path not in response.text
        assert 'value="Shift swap by text"' in response.text and "Details I typed" in response.text
        assert _ideas(session) == []


class TestWhatBecameOfIt:
    async def test_turned_into_a_draft_item_it_shows_linked_and_carries_the_authors_vote(self, client, session):
        product = make_product(session, name="Scheduling")
        customer = make_customer(session, make_organisation(session))
        idea = make_idea(session, customer, title="Rota templates", body="Reuse last week", product=product)
        pm = make_pm(session)
        sign_in(client, session, pm)

        page = await client.get(f"/admin/feedback/{idea.id}")
        assert page.status_code == 200
        assert 'value="Rota templates"' in page.text and "Reuse last week" in page.text  # prefilled
        stage_id = feedback.idea_item_form(session, idea)["stage_id"]
        response = await post_form(client, f"/admin/feedback/{idea.id}/item", {
            "title": "Rota templates", "description": "Reuse last week", "product_id": str(product.id),
            "stage_id": stage_id,
        }, page=f"/admin/feedback/{idea.id}")

        assert response.status_code == 303
        public_id = response.headers["location"].rsplit("/", 1)[-1]
        from app.roadmap import service as roadmap

        item = roadmap.get_item_for_staff(session, public_id)
        session.refresh(item)
        assert item.published_at is None and item.title == "Rota templates"
        assert item.vote_count == 1
        assert session.scalar(select(func.count()).select_from(Vote).where(
            Vote.item_id == item.id, Vote.user_id == customer.id)) == 1
        session.refresh(idea)
        assert idea.state is FeedbackState.linked and idea.item_id == item.id

        sign_in(client, session, customer)
        me = await client.get("/me")
        assert "Linked to an item" in me.text
        assert "Linked to an item the team has not published yet." in me.text
        assert item.path not in me.text  # a draft: no link, no title leak beyond the idea's own

        roadmap.set_published(session, item=item, published=True, actor=pm)
        session.flush()
        me = await client.get("/me")
        assert f'href="{item.path}"' in me.text

    async def test_declined_idea_shows_the_teams_reason(self, client, session):
        customer = make_customer(session, make_organisation(session))
        idea = make_idea(session, customer, title="Blockchain rosters")
        sign_in(client, session, make_pm(session))
        empty = await post_form(client, f"/admin/feedback/{idea.id}/decline", {"decline_reason": " "},
                                page=f"/admin/feedback/{idea.id}")
        assert empty.status_code == 422 and "Say why" in empty.text
        response = await post_form(client, f"/admin/feedback/{idea.id}/decline",
                                   {"decline_reason": "We keep rosters simple & fast."},
                                   page=f"/admin/feedback/{idea.id}")
        assert response.status_code == 303
        from app.audit.models import AuditEvent

        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "feedback.declined"))
        assert event is not None and event.changes["decline_reason"] == ["", "We keep rosters simple & fast."]

        sign_in(client, session, customer)
        me = await client.get("/me")
        assert "Blockchain rosters" in me.text and "Declined" in me.text
        assert "We keep rosters simple &amp; fast." in me.text

    async def test_linked_to_a_public_item_shows_a_link(self, client, session):
        customer = make_customer(session)
        idea = make_idea(session, customer, title="Night shifts")
        item = make_item(session, title="Overnight shift support")
        pm = make_pm(session)
        feedback.link_to_item(session, feedback=idea, item=item, actor=pm)
        sign_in(client, session, customer)
        me = await client.get("/me")
        assert f'<a href="{item.path}">Overnight shift support</a>' in me.text

    async def test_other_peoples_ideas_are_not_on_my_page(self, client, session):
        make_idea(session, make_customer(session), title="Somebody else's idea")
        sign_in(client, session, make_customer(session))
        me = await client.get("/me")
        assert "Somebody else" not in me.text and "You have not sent any ideas yet." in me.text
