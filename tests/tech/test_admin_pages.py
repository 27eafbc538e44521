"""What the technology roadmap's admin pages say: the history of an item's delivery settings names stages, the
wide initiatives table says it scrolls, and the API tokens page names what tokens can do (and only that)."""

from __future__ import annotations

import pytest

from tests.factories import make_item, make_pm, stage
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pat@example.com")
    sign_in(client, session, user)
    return user


async def test_the_delivery_settings_history_names_the_stages(client, session, pm):
    item = make_item(session, title="Faster exports")
    page = f"/admin/items/{item.public_id}"
    saved = await post_form(client, f"{page}/delivery", {"started_stage_id": str(stage(session, "in-progress").id),
                                                         "done_stage_id": str(stage(session, "released").id)},
                            page=page)
    assert saved.status_code == 303
    history = (await client.get(page)).text
    assert "Delivery settings changed" in history
    assert "“In progress”" in history and "“Released”" in history


async def test_the_wide_initiatives_table_says_it_scrolls(client, session, pm):
    from app.tech import service as tech

    tech.create_initiative(session, data=tech.InitiativeForm(title="Export pipeline"), actor=pm)
    listing = (await client.get("/admin/tech")).text
    assert 'data-scroll-hint-for="initiatives-table"' in listing and 'id="initiatives-table"' in listing
    assert "Scroll sideways for more columns" in listing


async def test_the_tokens_page_names_what_tokens_can_do(client, session, pm):
    page = (await client.get("/admin/tokens")).text
    assert "GET /api/v1/initiatives" in page
    assert "creates, changes and deletes initiatives and their backlog links" in page
    assert "Read and write: also set RICE estimates, and change initiatives and backlog links" in page
