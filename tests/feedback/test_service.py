"""The feedback service on its own: "tell us why" reasons, and private feedback staying private."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from app.accounts.viewer import Viewer
from app.errors import FormInvalid
from app.feedback import service as feedback
from app.feedback.models import Feedback, FeedbackKind, FeedbackState
from tests.factories import make_item, make_user
from tests.feedback.helpers import make_customer, make_organisation


class TestAddReason:
    def test_stores_a_private_note_attached_to_the_item(self, session):
        organisation = make_organisation(session)
        customer = make_customer(session, organisation)
        item = make_item(session)
        reason = feedback.add_reason(session, item=item, author=customer, body="  We lose a day a week  ")
        assert reason is not None
        assert (reason.kind, reason.state, reason.item_id, reason.product_id, reason.author_id,
                reason.organisation_id, reason.body) == (
            FeedbackKind.reason, FeedbackState.linked, item.id, item.product_id, customer.id, organisation.id,
            "We lose a day a week")

    def test_an_empty_note_stores_nothing(self, session):
        assert feedback.add_reason(session, item=make_item(session), author=make_user(session), body="  \n ") is None
        assert session.scalar(select(Feedback)) is None

    def test_an_over_long_note_is_refused_with_a_message(self, session):
        with pytest.raises(FormInvalid) as refused:
            feedback.add_reason(session, item=make_item(session), author=make_user(session),
                                body="x" * (feedback.MAX_REASON + 1))
        assert refused.value.errors == {"reason": f"Keep it to {feedback.MAX_REASON:,} characters (it has "
                                                  f"{feedback.MAX_REASON + 1:,})."}

    def test_the_author_sees_it_on_their_own_list(self, session):
        customer = make_user(session)
        item = make_item(session, title="Overtime rules")
        feedback.add_reason(session, item=item, author=customer, body="Union rules")
        page = feedback.my_feedback(session, viewer=Viewer(user=customer))
        [mine] = page.feedback
        assert mine.item is not None and mine.item.id == item.id and mine.status == "Linked to an item"


async def test_a_reason_never_shows_on_public_pages_feeds_search_or_the_api(client, session):
    customer = make_user(session)
    item = make_item(session, title="Public item", stage_slug="released", release_notes="Shipped")
    feedback.add_reason(session, item=item, author=customer, body="Zanzibarian payroll needs this")
    session.flush()
    for path in (item.path, "/", "/changelog", "/changelog.atom", "/search?q=zanzibarian", "/api/v1/items",
                 f"/api/v1/items/{item.public_id}"):
        response = await client.get(path)
        assert response.status_code == 200, path
        assert "Zanzibarian" not in response.text, path
