"""Products, stages and tags as a product manager manages them, and what the public board shows after."""

from __future__ import annotations

import re

import pytest

from tests.factories import make_admin, make_item, make_pm, make_product, make_tag, stage
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pat@example.com")
    sign_in(client, session, user)
    return user


def column_headings(html: str) -> list[str]:
    return [re.sub(r"\s+", " ", h).strip() for h in re.findall(r'<h2 class="column-title"[^>]*>([^<]*)<', html)]


# --- products -------------------------------------------------------------------------------------------


async def test_create_and_rename_a_product(client, session, pm):
    created = await post_form(client, "/admin/products", {"name": "Mobile app", "description": "iOS and Android"},
                              page="/admin/products")
    assert created.status_code == 303
    page = await client.get("/admin/products")
    assert "Product “Mobile app” created." in page.text and "iOS and Android" in page.text

    product_id = re.search(r'href="/admin/products/(\d+)">Edit<span class="visually-hidden"> Mobile app', page.text)
    path = f"/admin/products/{product_id.group(1)}"
    renamed = await post_form(client, path, {"name": "Mobile apps", "description": "Phones"}, page=path)
    assert renamed.status_code == 303
    assert "Mobile apps" in (await client.get("/admin/products")).text


async def test_product_needs_a_name(client, session, pm):
    response = await post_form(client, "/admin/products", {"name": "  ", "description": "Kept text"},
                               page="/admin/products")
    assert response.status_code == 422
    assert "A name is required." in response.text and "Kept text" in response.text


async def test_deleting_a_product_with_items_is_refused(client, session, pm):
    product = make_product(session, name="Reporting")
    make_item(session, product=product, title="Scheduled exports")

    response = await post_form(client, f"/admin/products/{product.id}/delete", page=f"/admin/products/{product.id}")
    assert response.status_code == 409
    assert "“Reporting” still has items. Move them to another product first." in response.text

    assert "Reporting" in (await client.get("/admin/products")).text
    assert "Scheduled exports" in (await client.get("/")).text


async def test_deleting_an_unused_product(client, session, pm):
    product = make_product(session, name="Retired thing")
    response = await post_form(client, f"/admin/products/{product.id}/delete", page=f"/admin/products/{product.id}")
    assert response.status_code == 303
    page = await client.get("/admin/products")
    assert "Product “Retired thing” deleted." in page.text
    assert (await client.get(f"/admin/products/{product.id}")).status_code == 404


# --- stages ---------------------------------------------------------------------------------------------


async def test_renamed_stage_is_the_board_column_heading(client, session, pm):
    planned = stage(session, "planned")
    make_item(session, stage_slug="planned")
    response = await post_form(client, f"/admin/stages/{planned.id}",
                               {"name": "Scheduled", "on_board": "1"}, page=f"/admin/stages/{planned.id}")
    assert response.status_code == 303

    client.cookies.clear()
    headings = column_headings((await client.get("/")).text)
    assert any(h.startswith("Scheduled") for h in headings)
    assert not any(h.startswith("Planned") for h in headings)


async def test_moving_a_stage_changes_the_column_order(client, session, pm):
    make_item(session, stage_slug="planned")
    before = column_headings((await client.get("/")).text)
    assert [h.split()[0] for h in before[1:3]] == ["Planned", "In"]

    in_progress = stage(session, "in-progress")
    response = await post_form(client, f"/admin/stages/{in_progress.id}/move", {"direction": "up"},
                               page="/admin/stages")
    assert response.status_code == 303
    assert "“In progress” moved earlier." in (await client.get("/admin/stages")).text

    after = column_headings((await client.get("/")).text)
    assert [h.split()[0] for h in after[1:3]] == ["In", "Planned"]


async def test_stage_flags_change_the_board(client, session, pm):
    make_item(session, stage_slug="planned")
    planned = stage(session, "planned")
    # Unticking "shown as a board column" removes the column.
    await post_form(client, f"/admin/stages/{planned.id}", {"name": "Planned"}, page=f"/admin/stages/{planned.id}")
    assert not any(h.startswith("Planned") for h in column_headings((await client.get("/")).text))
    page = await client.get("/admin/stages")
    row = page.text.split('<th scope="row">Planned</th>')[1].split("</tr>")[0]
    assert re.findall(r"<td>(Yes|No)</td>", row) == ["No", "No", "No"]

    await post_form(client, f"/admin/stages/{planned.id}", {"name": "Planned", "on_board": "1", "is_released": "1"},
                    page=f"/admin/stages/{planned.id}")
    page = await client.get("/admin/stages")
    row = page.text.split('<th scope="row">Planned</th>')[1].split("</tr>")[0]
    assert re.findall(r"<td>(Yes|No)</td>", row) == ["Yes", "Yes", "No"]


async def test_new_stage_goes_to_the_end(client, session, pm):
    response = await post_form(client, "/admin/stages", {"name": "Beta", "on_board": "1"}, page="/admin/stages")
    assert response.status_code == 303
    page = await client.get("/admin/stages")
    names = re.findall(r'<th scope="row">([^<]+)</th>', page.text)
    assert names[-1] == "Beta"


async def test_deleting_a_stage_in_use_is_refused(client, session, pm):
    planned = stage(session, "planned")
    make_item(session, stage_slug="planned")
    response = await post_form(client, f"/admin/stages/{planned.id}/delete", page=f"/admin/stages/{planned.id}")
    assert response.status_code == 409
    assert "“Planned” still has items." in response.text
    assert '<th scope="row">Planned</th>' in (await client.get("/admin/stages")).text


async def test_deleting_an_unused_stage(client, session, pm):
    await post_form(client, "/admin/stages", {"name": "Parked"}, page="/admin/stages")
    page = await client.get("/admin/stages")
    stage_id = re.search(r'href="/admin/stages/(\d+)">Edit<span class="visually-hidden"> Parked', page.text).group(1)
    response = await post_form(client, f"/admin/stages/{stage_id}/delete", page=f"/admin/stages/{stage_id}")
    assert response.status_code == 303
    page = (await client.get("/admin/stages")).text
    assert "Stage “Parked” deleted." in page
    assert '<th scope="row">Parked</th>' not in page


# --- tags -----------------------------------------------------------------------------------------------


async def test_tags_create_rename_delete(client, session, pm):
    created = await post_form(client, "/admin/tags", {"name": "Reporting"}, page="/admin/tags")
    assert created.status_code == 303
    page = await client.get("/admin/tags")
    tag_id = re.search(r'href="/admin/tags/(\d+)">Edit', page.text).group(1)

    duplicate = await post_form(client, "/admin/tags", {"name": "reporting"}, page="/admin/tags")
    assert duplicate.status_code == 422 and "There is already a tag called" in duplicate.text

    renamed = await post_form(client, f"/admin/tags/{tag_id}", {"name": "Reports"}, page=f"/admin/tags/{tag_id}")
    assert renamed.status_code == 303
    assert '<span class="tag">Reports</span>' in (await client.get("/admin/tags")).text

    deleted = await post_form(client, f"/admin/tags/{tag_id}/delete", page=f"/admin/tags/{tag_id}")
    assert deleted.status_code == 303
    assert "Reports" not in (await client.get("/admin/tags")).text.split("Tag “Reports” deleted.")[1]


async def test_renamed_tag_shows_on_public_cards_and_deleted_tag_leaves_them(client, session, pm):
    tag = make_tag(session, "Integrations")
    other = make_tag(session, "Exports")
    make_item(session, title="Slack alerts", tags=[tag, other])
    await post_form(client, f"/admin/tags/{tag.id}", {"name": "Connectors"}, page=f"/admin/tags/{tag.id}")
    board = (await client.get("/")).text
    assert "Connectors" in board and "Integrations" not in board

    response = await post_form(client, f"/admin/tags/{tag.id}/delete", page=f"/admin/tags/{tag.id}")
    assert "It was removed from 1 item." in (await client.get(response.headers["location"])).text
    board = (await client.get("/")).text
    assert "Slack alerts" in board and "Connectors" not in board and "Exports" in board


async def test_renaming_a_tag_onto_another_is_refused(client, session, pm):
    make_tag(session, "Reporting")
    tag = make_tag(session, "Exports")
    response = await post_form(client, f"/admin/tags/{tag.id}", {"name": "REPORTING"}, page=f"/admin/tags/{tag.id}")
    assert response.status_code == 422
    assert 'value="REPORTING"' in response.text


# --- overview and audit log -----------------------------------------------------------------------------


async def test_overview_counts_published_items_per_stage_and_drafts(client, session, pm):
    product = make_product(session)
    make_item(session, product=product, stage_slug="planned")
    make_item(session, product=product, stage_slug="planned")
    make_item(session, product=product, stage_slug="in-progress")
    make_item(session, product=product, stage_slug="planned", published=False)
    page = await client.get("/admin")
    assert re.search(r"Planned</th>\s*<td><a [^>]*>2</a>", page.text)
    assert re.search(r"In progress</th>\s*<td><a [^>]*>1</a>", page.text)
    assert "<strong>1</strong> draft waiting" in page.text
    assert 'href="/admin/items/new"' in page.text
    assert "Recent changes" not in page.text  # the audit log is for admins


async def test_audit_log_lists_changes_with_before_and_after(client, session):
    admin = make_admin(session, email="ada@example.com")
    sign_in(client, session, admin)
    planned = stage(session, "planned")
    product = make_product(session, name="Reporting")
    make_item(session, product=product)
    await post_form(client, f"/admin/stages/{planned.id}", {"name": "Scheduled", "on_board": "1"},
                    page=f"/admin/stages/{planned.id}")
    await post_form(client, f"/admin/products/{product.id}", {"name": "Reports", "description": ""},
                    page=f"/admin/products/{product.id}")
    await post_form(client, f"/admin/products/{product.id}/delete", page=f"/admin/products/{product.id}")

    log = (await client.get("/admin/audit")).text
    assert re.search(r"<del>“Planned”</del>\s*<span[^>]*>→</span>\s*<ins>“Scheduled”</ins>", log)
    assert re.search(r"<del>“Reporting”</del>\s*<span[^>]*>→</span>\s*<ins>“Reports”</ins>", log)
    assert "ada@example.com" in log
    assert "Deleted" not in log  # the refused delete left no trace

    only_stages = (await client.get("/admin/audit?type=stage")).text
    assert "Scheduled" in only_stages and "“Reports”" not in only_stages

    overview = (await client.get("/admin")).text
    assert "Recent changes" in overview and "“Scheduled”" in overview
