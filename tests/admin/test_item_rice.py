"""The item editor has the item's RICE estimate and shows who wants it (issue 10: "entered by the PM on the item
(editor fields, audited)"; "the item editor does not show a single vote")."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from app.admin import items as admin_items
from app.audit.actions import AuditAction
from app.audit.models import AuditEvent
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from tests.desk.helpers import expected_desk, set_up
from tests.factories import make_admin
from tests.helpers.http import page_words as words
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def editor_form(session, item: Item) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """The editor's form as the page fills it for the item."""
    session.expire(item)
    return {**admin_items._item_form(roadmap.get_item_for_staff(session, item.public_id)), "action": "save"}


def estimates(session, item: Item) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    return list(session.scalars(select(AuditEvent).where(AuditEvent.action == AuditAction.item_estimated.value,
                                                         AuditEvent.entity_id == item.public_id)))


class TestTheEditorHasTheRiceEstimate:
    async def test_it_shows_the_estimate_labelled_apart_from_the_timeframes_confidence(self, client, session, admin):
        world = await set_up(client, session)  # X: confidence 80 %, effort 2, saved on its demand page
        page = (await client.get(f"/admin/items/{world.items['X'].public_id}")).text
        assert re.search(r'<label[^>]*for="f-rice_confidence"[^>]*>\s*RICE confidence \(%\)', page)
        assert re.search(r'<label[^>]*for="f-effort"[^>]*>\s*Effort \(person-months\)', page)
        assert re.search(r'name="rice_confidence"[^>]*value="80"', page)
        assert re.search(r'name="effort"[^>]*value="2"', page)

    async def test_saving_the_editor_saves_the_estimate_audited_as_the_demand_page_does(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        audited = len(estimates(session, x))
        form = {**editor_form(session, x), "rice_confidence": "60%", "effort": "1.5"}
        saved = await post_form(client, f"/admin/items/{x.public_id}", form, page=f"/admin/items/{x.public_id}")
        assert saved.status_code == 303
        session.expire(x)
        assert (x.rice_confidence, str(x.effort.normalize())) == (60, "1.5")
        assert len(estimates(session, x)) == audited + 1
        demand = words((await client.get(f"/admin/desk/items/{x.public_id}")).text)
        assert "× 60% ÷ 1.5" in demand  # the desk's RICE uses it
        cleared = {**editor_form(session, x), "rice_confidence": "", "effort": ""}
        await post_form(client, f"/admin/items/{x.public_id}", cleared, page=f"/admin/items/{x.public_id}")
        session.expire(x)
        assert (x.rice_confidence, x.effort) == (None, None)

    async def test_bad_input_is_refused_with_everything_typed_kept(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        form = {**editor_form(session, x), "title": "Bulk shift import, again", "rice_confidence": "150",
                "effort": "two"}
        refused = await post_form(client, f"/admin/items/{x.public_id}", form, page=f"/admin/items/{x.public_id}")
        assert refused.status_code == 422
        text = words(refused.text)
        assert "A whole percentage from 1 to 100" in text and "Person-months from 0.01 to 9999" in text
        for name, value in (("title", "Bulk shift import, again"), ("rice_confidence", "150"), ("effort", "two")):
            assert re.search(fr'name="{name}"[^>]*value="{re.escape(value)}"', refused.text), name
        session.expire(x)
        assert (x.title, x.rice_confidence) == ("Bulk shift import", 80)  # nothing saved

    async def test_a_form_without_the_estimate_leaves_it_as_it_is(self, client, session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        form = {k: v for k, v in editor_form(session, x).items() if k not in ("rice_confidence", "effort")}
        saved = await post_form(client, f"/admin/items/{x.public_id}", {**form, "summary": "New summary"},
                                page=f"/admin/items/{x.public_id}")
        assert saved.status_code == 303
        session.expire(x)
        assert (x.summary, x.rice_confidence, str(x.effort.normalize())) == ("New summary", 80, "2")


class TestTheEditorShowsWhoWantsIt:
    async def test_voters_and_weighted_demand_of_the_desks_default_window_with_its_demand_page(self, client,
                                                                                               session, admin):
        world = await set_up(client, session)
        x = world.items["X"]
        want = expected_desk("90")["X"]
        assert want["voters"] != expected_desk("all")["X"]["voters"]  # the window shows
        text = words((await client.get(f"/admin/items/{x.public_id}")).text)
        assert (f"In the last 90 days (the desk’s default window): {want['voters']} voters from "
                f"{want['organisations']} organisations, weighted demand {want['demand']:.2f}") in text
        assert f"({want['mix'][0]} nice to have · {want['mix'][1]} important · {want['mix'][2]} critical)" in text
        page = (await client.get(f"/admin/items/{x.public_id}")).text
        assert f'<a href="/admin/desk/items/{x.public_id}">Its demand page</a>' in page

    async def test_an_item_nobody_voted_for_says_so(self, client, session, admin):
        world = await set_up(client, session)
        text = words((await client.get(f"/admin/items/{world.items['W'].public_id}")).text)
        assert "Nobody voted for it in the last 90 days (the desk’s default window)." in text
