"""The staff item editor: what a product manager does with items, and what everyone else then sees."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import httpx
import pytest
from sqlalchemy import func, select

from app.accounts.models import Role
from app.audit.models import AuditEvent
from app.roadmap.models import Item
from app.roadmap.timeframes import quarter_choices
from tests.admin.helpers import item_form
from tests.factories import make_item, make_pm, make_product, make_tag, make_user, stage
from tests.helpers.http import csrf_token, post_form, sign_in


@pytest.fixture
async def visitor(app) -> AsyncIterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    """A signed-out person in a browser of their own."""
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, display_name="Pat Manager")
    sign_in(client, session, user)
    return user


def count_items(session) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(Item)) or 0


async def create(client, data, action="draft") -> str:  # type: ignore[no-untyped-def]
    response = await post_form(client, "/admin/items", {**data, "action": action}, page="/admin/items/new")
    assert response.status_code == 303, response.text
    match = re.fullmatch(r"/admin/items/([a-z0-9]+)", response.headers["location"])
    assert match, response.headers["location"]
    return match.group(1)


class TestDraftAndPublish:
    async def test_a_draft_is_listed_for_staff_but_absent_for_visitors(self, client, visitor, session, pm):
        product = make_product(session, name="Reports")
        public_id = await create(client, item_form(product, stage(session, "planned")), action="draft")

        edit = await client.get(f"/admin/items/{public_id}")
        assert "Draft saved" in edit.text
        assert 'value="Scheduled exports to S3"' in edit.text

        listing = await client.get("/admin/items")
        row = re.search(rf'<tr>\s*<th scope="row"><a href="/admin/items/{public_id}">.*?</tr>', listing.text, re.DOTALL)
        assert row and "Scheduled exports to S3" in row.group(0) and "Draft" in row.group(0)
        assert "Reports" in row.group(0) and "Planned" in row.group(0) and "Next" in row.group(0)

        assert "Scheduled exports to S3" not in (await visitor.get("/")).text
        assert (await visitor.get(f"/items/{public_id}")).status_code == 404

    async def test_publishing_puts_it_on_the_board_and_its_page(self, client, visitor, session, pm):
        product = make_product(session)
        public_id = await create(client, item_form(product, stage(session, "planned")), action="draft")

        response = await post_form(client, f"/admin/items/{public_id}/publish", page=f"/admin/items/{public_id}")
        assert response.status_code == 303
        assert "is now on the public roadmap" in (await client.get(response.headers["location"])).text

        assert "Scheduled exports to S3" in (await visitor.get("/")).text
        page = await visitor.get(f"/items/{public_id}", follow_redirects=True)
        assert page.status_code == 200
        assert "<strong>every Monday</strong>" in page.text

        listing = await client.get("/admin/items?status=published")
        assert "Scheduled exports to S3" in listing.text

    async def test_the_publish_button_of_the_new_form_publishes_at_once(self, client, visitor, session, pm):
        product = make_product(session)
        public_id = await create(client, item_form(product, stage(session, "planned")), action="publish")
        assert (await visitor.get(f"/items/{public_id}", follow_redirects=True)).status_code == 200
        edit = await client.get(f"/admin/items/{public_id}")
        assert ">Unpublish</button>" in edit.text

    async def test_unpublishing_takes_it_off_the_board(self, client, visitor, session, pm):
        item = make_item(session, title="Single sign-on with Okta")
        assert "Single sign-on with Okta" in (await visitor.get("/")).text

        response = await post_form(client, f"/admin/items/{item.public_id}/unpublish",
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        assert "Single sign-on with Okta" not in (await visitor.get("/")).text
        assert (await visitor.get(f"/items/{item.public_id}")).status_code == 404

    async def test_customer_only_and_internal_items_stay_hidden_from_visitors_when_published(
            self, client, visitor, session, pm):
        product = make_product(session)
        for visibility in ("customers", "internal"):
            public_id = await create(client, item_form(product, stage(session, "planned"), visibility=visibility,
                                                       title=f"Secret {visibility} plan"), action="publish")
            assert (await visitor.get(f"/items/{public_id}")).status_code == 404
            assert f"Secret {visibility} plan" not in (await visitor.get("/")).text


class TestEditing:
    async def test_the_form_is_prefilled_and_an_edit_is_audited_with_before_and_after(self, client, session, pm):
        tag = make_tag(session, "Integrations")
        item = make_item(session, title="Slack alerts", tags=[tag], internal_notes="Ask Dana about quotas")

        form = await client.get(f"/admin/items/{item.public_id}")
        assert form.status_code == 200
        assert 'value="Slack alerts"' in form.text
        assert f'value="{tag.id}" checked' in form.text
        assert "Ask Dana about quotas" in form.text

        data = item_form(item_product(session, item), stage(session, "planned"), title="Slack and Teams alerts",
                         tags=[str(tag.id)], internal_notes="Ask Dana about quotas", summary=item.summary,
                         description=item.description)
        response = await post_form(client, f"/admin/items/{item.public_id}", {**data, "action": "save"},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303

        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "item.updated",
                                                        AuditEvent.entity_id == item.public_id))
        assert event is not None and event.actor_label == pm.email
        assert event.changes["title"] == ["Slack alerts", "Slack and Teams alerts"]

        page = await client.get(f"/admin/items/{item.public_id}")
        assert "Changes saved" in page.text
        text = " ".join(re.sub(r"<[^>]+>", " ", page.text).split())
        assert "Title: “Slack alerts” → “Slack and Teams alerts”" in text

    async def test_changing_the_stage_in_the_form_adds_to_the_public_timeline(self, client, visitor, session, pm):
        item = make_item(session, stage_slug="planned")
        data = item_form(item_product(session, item), stage(session, "in-progress"), title=item.title,
                         summary=item.summary, description=item.description)
        response = await post_form(client, f"/admin/items/{item.public_id}", {**data, "action": "save"},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        assert "Moved from Planned to In progress" in (await client.get(response.headers["location"])).text

        page = await visitor.get(f"/items/{item.public_id}", follow_redirects=True)
        assert re.search(r"Moved from Planned to <strong>In progress</strong>", page.text)

    async def test_saving_an_unknown_item_is_not_found(self, client, session, pm):
        product = make_product(session)
        assert (await client.get("/admin/items/nosuchid")).status_code == 404
        response = await post_form(client, "/admin/items/nosuchid",
                                   {**item_form(product, stage(session, "planned")), "action": "save"},
                                   page="/admin/items")
        assert response.status_code == 404
        assert count_items(session) == 0


def item_product(session, item):  # type: ignore[no-untyped-def]
    from app.roadmap.models import Product

    return session.get(Product, item.product_id)


class TestMovingStage:
    async def test_a_move_shows_on_the_public_timeline(self, client, visitor, session, pm):
        item = make_item(session, stage_slug="planned", title="Audit log export")
        response = await post_form(client, f"/admin/items/{item.public_id}/stage",
                                   {"stage_id": str(stage(session, "in-progress").id)},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303

        page = await visitor.get(f"/items/{item.public_id}", follow_redirects=True)
        assert re.search(r"Moved from Planned to <strong>In progress</strong>", page.text)
        admin_page = await client.get(f"/admin/items/{item.public_id}")
        assert "Moved from Planned to In progress." in admin_page.text  # the flash
        assert re.search(r"Moved from Planned to <strong>In progress</strong>", admin_page.text)  # history

    async def test_moving_into_released_puts_it_on_the_changelog(self, client, visitor, session, pm):
        item = make_item(session, stage_slug="in-progress", title="Dark mode", release_notes="Follows your *system*.")
        assert "Dark mode" not in (await visitor.get("/changelog")).text

        response = await post_form(client, f"/admin/items/{item.public_id}/stage",
                                   {"stage_id": str(stage(session, "released").id)},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        assert "It now appears on the changelog" in (await client.get(response.headers["location"])).text

        changelog = await visitor.get("/changelog")
        assert "Dark mode" in changelog.text
        assert "Follows your <em>system</em>." in changelog.text


class TestInvalidForm:
    async def test_mistakes_are_shown_per_field_and_nothing_typed_is_lost(self, client, session, pm):
        product = make_product(session, name="Reports")
        tag = make_tag(session, "Mobile")
        make_tag(session, "Desktop")
        in_progress = stage(session, "in-progress")
        year, quarter = quarter_choices()[2]
        data = item_form(product, in_progress, title="  ", summary="x" * 301, product_id="99999",
                         description="My carefully typed description", timeframe=f"{year}-Q{quarter}",
                         confidence="high", visibility="internal", internal_notes="secret plan",
                         tags=[str(tag.id)])

        response = await post_form(client, "/admin/items", {**data, "action": "publish"}, page="/admin/items/new")

        assert response.status_code == 422
        text = response.text
        assert "A title is required." in text
        assert "Keep it to 300 characters (it has 301)." in text
        assert "Choose a product." in text
        assert "My carefully typed description" in text
        assert "secret plan" in text
        assert f'value="{tag.id}" checked' in text
        assert f'<option value="{in_progress.id}" selected>' in text
        assert f'<option value="{year}-Q{quarter}" selected>' in text
        assert '<option value="high" selected>' in text
        assert '<option value="internal" selected>' in text
        assert count_items(session) == 0

    async def test_an_invalid_edit_changes_nothing(self, client, session, pm):
        item = make_item(session, title="Keep me")
        data = item_form(item_product(session, item), stage(session, "planned"), title="",
                         description="Edited text")
        response = await post_form(client, f"/admin/items/{item.public_id}", {**data, "action": "save"},
                                   page=f"/admin/items/{item.public_id}")
        assert response.status_code == 422
        assert "Edited text" in response.text
        session.expire_all()
        assert session.get(Item, item.id).title == "Keep me"


class TestTheForm:
    async def test_new_form_offers_the_fields_a_pm_expects(self, client, session, pm):
        make_product(session)
        page = await client.get("/admin/items/new")
        assert page.status_code == 200
        for label in ("Title", "Summary", "Description", "Product", "Stage", "Timeframe", "Confidence",
                      "Visibility", "Release notes", "Internal notes"):
            assert re.search(rf"<label for=\"f-[a-z_]+\">{label}( <span|</label>)", page.text), label
        assert "<legend>Tags</legend>" in page.text
        options = re.findall(r'<option value="([^"]*)"', page.text.split('name="timeframe"')[1].split("</select>")[0])
        year, quarter = quarter_choices()[0]
        assert options[:4] == ["now", "next", "later", f"{year}-Q{quarter}"] and len(options) == 11
        assert "Signed-in customers" in page.text and "Internal (staff only)" in page.text
        assert 'name="action" value="draft"' in page.text and 'name="action" value="publish"' in page.text

    async def test_with_no_product_yet_the_pm_is_sent_to_create_one(self, client, session, pm):
        listing = await client.get("/admin/items")
        assert "Create a product first" in listing.text
        assert 'href="/admin/products"' in listing.text
        assert "Create a product first" in (await client.get("/admin/items/new")).text

    async def test_the_list_filters_by_status_product_stage_and_words(self, client, session, pm):
        reports, billing = make_product(session, name="Reports"), make_product(session, name="Billing")
        make_item(session, product=reports, title="Scheduled exports", stage_slug="planned")
        make_item(session, product=billing, title="Invoice reminders", stage_slug="in-progress", published=False)

        drafts = (await client.get("/admin/items?status=draft")).text
        assert "Invoice reminders" in drafts and "Scheduled exports" not in drafts
        by_product = (await client.get(f"/admin/items?product={reports.slug}")).text
        assert "Scheduled exports" in by_product and "Invoice reminders" not in by_product
        by_stage = (await client.get("/admin/items?stage=in-progress")).text
        assert "Invoice reminders" in by_stage and "Scheduled exports" not in by_stage
        by_words = (await client.get("/admin/items?q=invoi")).text
        assert "Invoice reminders" in by_words and "Scheduled exports" not in by_words
        nothing = (await client.get("/admin/items?q=zebra")).text
        assert "No items match" in nothing

    async def test_a_search_finds_every_match_however_many_with_the_other_filters(self, client, session, pm):
        """The walk-through: the staff search stopped at its 200 best matches (\"200 items\" for 428), and the
        filters applied after that cut."""
        product = make_product(session)
        for n in range(203):
            make_item(session, product=product, title=f"Export format {n:03d}", published=n != 202)

        found = (await client.get("/admin/items?q=expo")).text
        assert "203 items" in " ".join(found.split()) and "Page 1 of 5" in found
        drafts = (await client.get("/admin/items?q=expo&status=draft")).text
        assert "Export format 202" in drafts and "Export format 201" not in drafts

    async def test_a_long_list_is_counted_and_paged(self, client, session, pm):
        product = make_product(session)
        for n in range(51):
            make_item(session, product=product, title=f"Idea {n:02d}")

        first = (await client.get("/admin/items")).text
        assert "51 items." in first
        assert first.count('<th scope="row">') == 50
        assert "Page 1 of 2" in first and 'href="?page=2" rel="next"' in first

        second = (await client.get("/admin/items?page=2")).text
        assert second.count('<th scope="row">') == 1 and "Page 2 of 2" in second


class TestAccess:
    async def test_a_customer_gets_not_found(self, client, session):
        sign_in(client, session, make_user(session, role=Role.customer))
        assert (await client.get("/admin/items")).status_code == 404
        assert (await client.get("/admin/items/new")).status_code == 404

    async def test_a_signed_out_visitor_is_sent_to_sign_in(self, visitor):
        response = await visitor.get("/admin/items")
        assert response.status_code == 303
        assert response.headers["location"].startswith("/login?next=/admin/items")

    async def test_a_post_without_the_csrf_token_is_refused_and_saves_nothing(self, client, session, pm):
        product = make_product(session)
        await csrf_token(client, "/admin/items/new")  # the cookie is there; the form field is not
        response = await client.post("/admin/items", data={**item_form(product, stage(session, "planned")),
                                                            "action": "publish"})
        assert response.status_code == 403
        assert count_items(session) == 0

        item = make_item(session, published=False)
        response = await client.post(f"/admin/items/{item.public_id}/publish", data={"csrf_token": "forged"})
        assert response.status_code == 403
        session.expire_all()
        assert session.get(Item, item.id).published_at is None

    async def test_internal_notes_never_reach_the_public_item_page(self, client, visitor, session, pm):
        product = make_product(session)
        public_id = await create(client, item_form(product, stage(session, "planned"),
                                                   internal_notes="Churn risk: ACME wants this by March"),
                                 action="publish")
        page = await visitor.get(f"/items/{public_id}", follow_redirects=True)
        assert page.status_code == 200 and "Scheduled exports to S3" in page.text
        assert "Churn risk" not in page.text
        staff_view = await client.get(f"/items/{public_id}", follow_redirects=True)
        assert "Churn risk" not in staff_view.text



class TestSimilarItemsHint:
    """Staff creating an item are told when similar items exist, as customers suggesting an idea are."""

    async def test_as_the_title_is_typed_similar_items_are_listed_drafts_included(self, client, session, pm):
        product = make_product(session, name="Payroll")
        gusto = make_item(session, product=product, title="Payroll export to Gusto and ADP")
        draft = make_item(session, product=product, title="Payroll export to Xero", published=False)
        make_item(session, product=product, title="Custom roles and permissions",
                  summary="Roles such as payroll clerk")

        new = await client.get("/admin/items/new")
        assert 'data-similar-url="/admin/items/similar"' in new.text and "Check for similar items" in new.text
        fragment = (await client.get("/admin/items/similar", params={"q": "payroll export to sage"})).text
        assert "Similar items exist" in fragment
        assert f'href="/admin/items/{gusto.public_id}"' in fragment and f"/admin/items/{draft.public_id}" in fragment
        assert "Draft" in fragment and "Custom roles" not in fragment
        assert "Type a few words" in (await client.get("/admin/items/similar", params={"q": ""})).text
        assert "Nothing similar" in (await client.get("/admin/items/similar", params={"q": "popcorn"})).text

    async def test_without_javascript_the_check_button_lists_them_keeps_the_form_and_saves_nothing(
            self, client, session, pm):
        product = make_product(session, name="Payroll")
        gusto = make_item(session, product=product, title="Payroll export to Gusto and ADP")
        before = count_items(session)
        data = item_form(product, stage(session, "planned"), title="Payroll export to Sage",
                         description="Typed with care")
        checked = await post_form(client, "/admin/items", {**data, "action": "check"}, page="/admin/items/new")
        assert checked.status_code == 200
        assert f"/admin/items/{gusto.public_id}" in checked.text
        assert 'value="Payroll export to Sage"' in checked.text and "Typed with care" in checked.text
        assert count_items(session) == before
        edit = await client.get(f"/admin/items/{gusto.public_id}")
        assert "Check for similar items" not in edit.text  # only when creating

    async def test_customers_cannot_ask(self, client, session):
        sign_in(client, session, make_user(session))
        assert (await client.get("/admin/items/similar", params={"q": "payroll"})).status_code == 404


@pytest.mark.parametrize("segment", ["99999999999", "0", "abc"])
async def test_a_refused_edit_with_a_segment_id_no_column_holds_names_the_fields(client, session, pm, segment):
    """A refused form still checks its other fields against the database: a segment id out of range is
    refused by its own rule even when the visibility it depends on is refused, never looked up (PostgreSQL's
    integer would overflow: a 500)."""
    product = make_product(session)
    item = make_item(session, title="Dark mode", product=product)
    form = item_form(product, stage(session, "planned"), title="", visibility="everyone!")
    response = await client.post(f"/admin/items/{item.public_id}",
                                 data={**form, "segments": segment, "csrf_token": await csrf_token(client,
                                       f"/admin/items/{item.public_id}")})
    assert response.status_code == 422
    assert "A title is required." in response.text and "Choose who can see the item." in response.text


class TestPastTheLastPage:
    async def test_a_page_past_the_last_says_so_instead_of_no_items_yet(self, client, session, pm):
        product = make_product(session)
        for n in range(3):
            make_item(session, product=product, title=f"Paged item {n}")
        page = await client.get("/admin/items?page=4")
        assert page.status_code == 200 and "No items yet" not in page.text and "Paged item" not in page.text
        assert "Nothing on page 4" in page.text
        assert 'href="/admin/items">Go to the last page (page 1)</a>' in page.text  # its one address
