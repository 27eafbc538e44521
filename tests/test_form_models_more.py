"""The last forms read through pydantic models (issue 9): the desk's RICE and weights forms and the one-field
action forms. Each model is checked for the sentences a person reads, and each form over HTTP: refused with
HTTP 422 (or sent back where it came from), the message next to the field, what was typed still there, never
a 500."""

from __future__ import annotations

import html
from decimal import Decimal

import pytest
from sqlalchemy import func, select

from app.accounts import service as accounts
from app.accounts import sso
from app.admin import customers, items, merge, moderation, taxonomy
from app.admin import feedback as admin_feedback
from app.desk import service as desk
from app.feedback import views as ideas
from app.forms import read_values
from app.roadmap.models import Item
from app.voting import commands
from tests.admin.helpers import item_form
from tests.discussion.helpers import comment as make_comment
from tests.factories import make_admin, make_item, make_pm, make_product, make_user, stage
from tests.feedback.helpers import make_idea
from tests.helpers.http import post_form, sign_in


def count_items(session) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(Item)) or 0


def refused(response, *messages: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text[:500]
    page = html.unescape(response.text)
    for message in messages:
        assert message in page, message
    return page


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, display_name="Ada Admin")
    sign_in(client, session, user)
    return user


WEIGHTS = {"nice_to_have": "1", "important": "2", "critical": "3", "revenue_mode": "linear",
           "revenue_unit": "100,000", "revenue_cap": "3"}


class TestWeightsUpdate:
    def test_the_messages(self):
        form = read_values(desk.WeightsUpdate, {"nice_to_have": "lots", "important": "1.2345", "critical": "-1",
                                                "revenue_mode": "quadratic", "revenue_unit": "0",
                                                "revenue_cap": "1e3"})
        assert form.errors == {
            "nice_to_have": desk.WEIGHT_MESSAGE, "important": desk.WEIGHT_MESSAGE, "critical": desk.WEIGHT_MESSAGE,
            "revenue_mode": "Choose how revenue weighs votes.",
            "revenue_unit": "A revenue of at least 1, such as 100000.",
            "revenue_cap": "A factor from 1 to 1000, such as 3.",
        }
        assert desk.WEIGHT_MESSAGE == "A number from 0 to 1000, with at most three decimals, such as 2 or 1.5."
        empty = read_values(desk.WeightsUpdate, dict.fromkeys(WEIGHTS, ""))
        assert set(empty.errors) == set(WEIGHTS)  # nothing typed is not a weight of 0

    def test_what_people_type(self):
        form = read_values(desk.WeightsUpdate, {**WEIGHTS, "critical": " 2.5 ", "revenue_unit": "1,000,000"})
        assert form.data is not None
        weights = form.data.weights()
        assert (weights.critical, weights.revenue_unit, weights.revenue_mode) == (
            Decimal("2.5"), Decimal(1_000_000), desk.RevenueMode.linear)

    async def test_the_form_keeps_what_was_typed(self, client, session, admin):
        long = "9" * 41
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, "critical": "lots",
                                                                    "revenue_cap": long},
                                   page="/admin/desk/weights")
        page = refused(response, desk.WEIGHT_MESSAGE, "A factor from 1 to 1000, such as 3.")
        assert 'value="lots"' in page and f'value="{long}"' in page and 'value="100,000"' in page


class TestRiceUpdate:
    CONFIDENCE = "A whole percentage from 1 to 100, such as 80 (or leave it empty)."
    EFFORT = "Person-months from 0.01 to 9999, such as 2 or 0.5 (or leave it empty)."

    def test_the_messages(self):
        for confidence, effort in (("180", "-1"), ("80.5", "0.001"), ("eighty", "two"), ("0", "10000")):
            form = read_values(desk.RiceUpdate, {"rice_confidence": confidence, "effort": effort})
            assert form.errors == {"rice_confidence": self.CONFIDENCE, "effort": self.EFFORT}, (confidence, effort)

    def test_what_people_type(self):
        form = read_values(desk.RiceUpdate, {"rice_confidence": "80 %", "effort": "0.5"})
        assert form.data is not None and (form.data.rice_confidence, form.data.effort) == (80, Decimal("0.5"))
        cleared = read_values(desk.RiceUpdate, {"rice_confidence": " ", "effort": ""})
        assert cleared.data is not None and (cleared.data.rice_confidence, cleared.data.effort) == (None, None)

    async def test_the_form_keeps_what_was_typed(self, client, session, admin):
        item = make_item(session)
        response = await post_form(client, f"/admin/desk/items/{item.public_id}/rice",
                                   {"rice_confidence": "eighty", "effort": "x" * 50}, page="/admin/desk")
        page = refused(response, self.CONFIDENCE, self.EFFORT)
        assert 'value="eighty"' in page and "x" * 50 in page
        assert item.rice_confidence is None and item.effort is None


# --- one-button forms ---------------------------------------------------------------------------------------


class TestOneButtonModels:
    """Each model's sentence, and what a value no page sends becomes."""

    def test_where_a_form_goes_back_to(self):
        assert read_values(commands.ReturnTo, {"next": "/items/abc#follow"}).valid().next == "/items/abc#follow"
        # Longer than any address: dropped, not refused (the route goes back to the item, the rest is acted on).
        assert read_values(commands.ReturnTo, {"next": "/" + "a" * 2000}).valid().next == ""
        assert read_values(commands.ReturnTo, {"next": "/" + "a" * 1999}).valid().next == "/" + "a" * 1999
        withdrawal = read_values(commands.VoteWithdrawal, {"next": "/", "widget": "sidebar"}).valid()
        assert withdrawal.widget == "card"
        assert read_values(moderation.ReturnTo, {"return_to": "x" * 2001}).valid().return_to == ""

    def test_link_and_merge(self):
        assert read_values(admin_feedback.LinkToItem, {"item": ""}).errors == {
            "item": "Choose the item to link this to: search for it first."}
        assert read_values(admin_feedback.LinkToItem, {"item": "x" * 17}).errors == {
            "item": "That item no longer exists; search again."}
        assert read_values(merge.MergeInto, {"into": " ", "publish_comments": ""}).errors == {
            "into": "Choose the item to merge into: search for it below."}
        chosen = read_values(merge.MergeInto, {"into": "abcd1234", "publish_comments": "1"}).valid()
        assert (chosen.into, chosen.publish_comments) == ("abcd1234", True)
        assert read_values(merge.MergeInto, {"into": "abcd1234", "publish_comments": ""}).valid().publish_comments \
            is False
        assert read_values(admin_feedback.CaptureSearch, {"customer_q": " dana "}).valid().customer_q == "dana"

    def test_enable_disable_move_and_direction(self):
        assert read_values(accounts.AccountActive, {"active": "1"}).valid().active is True
        assert read_values(accounts.AccountActive, {"active": "0"}).valid().active is False
        for bad in ("", "yes", "true", "01"):
            assert read_values(accounts.AccountActive, {"active": bad}).errors == {
                "active": "Choose to enable or disable the account."}, bad
        moved = read_values(customers.PersonMove, {"organisation_id": "", "return_to": "/admin/people"}).valid()
        assert moved.organisation_id is None  # no organisation
        for bad in ("acme", "1" * 40, "²", "-3"):
            assert read_values(customers.PersonMove, {"organisation_id": bad, "return_to": ""}).errors == {
                "organisation_id": "Choose an organisation to move them to."}, bad
        assert read_values(taxonomy.StageMove, {"direction": "down"}).valid().direction is taxonomy.Direction.down
        for bad in ("", "left", "UP"):
            assert read_values(taxonomy.StageMove, {"direction": bad}).errors == {
                "direction": "Choose to move the stage up or down."}, bad

    def test_buttons_and_the_switch_token(self):
        assert read_values(items.NewItemButton, {"action": ""}).valid().action is items.NewItemAction.draft
        assert read_values(items.NewItemButton, {"action": "publish"}).valid().action is items.NewItemAction.publish
        assert read_values(items.NewItemButton, {"action": "delete"}).errors == {
            "action": "Choose Save draft or Publish."}
        assert read_values(ideas.IdeaButton, {"action": ""}).valid().action is ideas.IdeaAction.submit
        assert read_values(ideas.IdeaButton, {"action": "shout"}).errors == {
            "action": "Choose Send to the product team or Check for similar items."}
        assert read_values(sso.SwitchConfirm, {"switch": "abc.def"}).valid().switch == "abc.def"
        assert set(read_values(sso.SwitchConfirm, {"switch": "x" * (4 * sso.MAX_TOKEN_LENGTH + 1)}).errors) == {
            "switch"}


class TestOneButtonForms:
    """Over HTTP: a value no page sends is refused with the sentence, changes nothing, and is never a 500."""

    async def test_a_bad_enable_value_disables_nobody(self, client, session, admin):
        pm, customer = make_pm(session, display_name="Pat Manager"), make_user(session, display_name="Dana Doe")
        staff = await post_form(client, f"/admin/staff/{pm.id}/active", {"active": "maybe"}, page="/admin/staff")
        assert staff.status_code == 422 and "Choose to enable or disable the account." in html.unescape(staff.text)
        person = await post_form(client, f"/admin/people/{customer.id}/active",
                                 {"active": "maybe", "return_to": "/admin/people"}, page="/admin/people")
        assert person.status_code == 303 and person.headers["location"] == "/admin/people"
        assert "Choose to enable or disable the account." in html.unescape(
            (await client.get(person.headers["location"])).text)
        session.refresh(pm)
        session.refresh(customer)
        assert pm.is_active and customer.is_active

    async def test_a_stage_moves_only_up_or_down(self, client, session, admin):
        planned = stage(session, "planned")
        before = planned.position
        moved = await post_form(client, f"/admin/stages/{planned.id}/move", {"direction": "sideways"},
                                page="/admin/stages")
        assert moved.status_code == 303
        assert "Choose to move the stage up or down." in html.unescape((await client.get("/admin/stages")).text)
        session.refresh(planned)
        assert planned.position == before

    async def test_linking_and_merging_without_a_chosen_item(self, client, session, admin):
        item = make_item(session, title="Dark mode")
        merged = await post_form(client, f"/admin/items/{item.public_id}/merge", {"into": ""},
                                 page=f"/admin/items/{item.public_id}/merge")
        page = refused(merged, "Choose the item to merge into: search for it below.")
        assert "Dark mode" in page
        idea = make_idea(session, make_user(session), title="Please add dark mode")
        linked = await post_form(client, f"/admin/feedback/{idea.id}/link", {"item": ""},
                                 page=f"/admin/feedback/{idea.id}")
        assert linked.status_code == 303
        assert "Choose the item to link this to: search for it first." in html.unescape(
            (await client.get(linked.headers["location"])).text)
        session.refresh(idea)
        assert idea.item_id is None

    async def test_a_new_item_with_an_unknown_button_keeps_what_was_typed(self, client, session, admin):
        data = item_form(make_product(session), stage(session, "planned"), title="Scheduled exports to S3")
        response = await post_form(client, "/admin/items", {**data, "action": "delete"}, page="/admin/items/new")
        page = refused(response, "Choose Save draft or Publish.")
        assert 'value="Scheduled exports to S3"' in page
        assert count_items(session) == 0

    async def test_an_idea_with_an_unknown_button_keeps_what_was_typed(self, client, session):
        sign_in(client, session, make_user(session))
        response = await post_form(client, "/ideas", {"title": "Export to Excel", "body": "Monthly, please.",
                                                      "action": "shout"}, page="/ideas/new")
        page = refused(response, "Choose Send to the product team or Check for similar items.")
        assert 'value="Export to Excel"' in page and "Monthly, please." in page

    async def test_an_address_too_long_to_go_back_to_goes_back_to_the_item(self, client, session):
        item = make_item(session, title="Dark mode")
        sign_in(client, session, make_user(session))
        for action in ("follow", "unfollow", "unvote"):
            response = await post_form(client, f"/items/{item.public_id}/{action}", {"next": "/" + "a" * 2500},
                                       page=item.path)
            assert response.status_code == 303, action
            assert response.headers["location"].startswith(item.path + "#"), action

    async def test_a_comment_action_too_long_to_go_back_to_goes_to_moderation(self, client, session, admin):
        comment = make_comment(session, make_item(session), make_user(session))
        response = await post_form(client, f"/admin/moderation/{comment.public_id}/dismiss",
                                   {"return_to": "/" + "a" * 2500}, page="/admin/moderation")
        assert response.status_code == 303 and response.headers["location"] == "/admin/moderation"
