"""Initiatives as a PM keeps them: created, linked to items and to tracker issues by address, their progress
and demand; the item's page shows what delivers it; customers see nothing of it."""

from __future__ import annotations

import re

import pytest

from app.tech import service as tech
from app.tech.models import BacklogLink, Initiative, TrackerKind
from app.voting.models import Vote
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pat@example.com", display_name="Pat PM")
    sign_in(client, session, user)
    return user


async def _create(client, title="Search cluster migration", **extra):  # type: ignore[no-untyped-def]
    data = {"title": title, "description": "Move **search**.", "status": "active", "quarter": "", "owner_id": "",
            **extra}
    response = await post_form(client, "/admin/tech", data, page="/admin/tech/new")
    assert response.status_code == 303, response.text
    return response.headers["location"]


async def test_a_pm_creates_an_initiative_and_finds_it_in_list_and_timeline(client, session, pm):
    path = await _create(client, quarter="2027-Q1", owner_id=str(pm.id))
    page = await client.get(path)
    assert "Search cluster migration" in page.text and "<strong>search</strong>" in page.text
    assert "Owner: Pat PM" in page.text

    listing = await client.get("/admin/tech")
    assert "Search cluster migration" in listing.text and "2027 Q1" in listing.text
    timeline = await client.get("/admin/tech?view=timeline")
    assert re.search(r'<h2 id="q-1">2027 Q1</h2>\s*<article', timeline.text)
    assert "Search cluster migration" in (await client.get("/admin/tech?status=active&quarter=2027-Q1")).text
    assert "Search cluster migration" not in (await client.get("/admin/tech?status=done")).text
    assert "Nothing matches these filters" in (await client.get("/admin/tech?quarter=none")).text


async def test_a_refused_initiative_keeps_what_was_typed(client, session, pm):
    response = await post_form(client, "/admin/tech", {"title": " ", "description": "Kept words", "status": "bogus",
                                                       "quarter": "2027-Q9"}, page="/admin/tech/new")
    assert response.status_code == 422
    assert "A title is required." in response.text and "Kept words" in response.text
    assert "Choose a quarter, or none." in response.text
    assert session.query(Initiative).count() == 0


async def test_items_and_links_by_url_give_progress_and_demand(client, session, pm):
    path = await _create(client)
    a, b = make_item(session, title="Faster search"), make_item(session, title="Search filters")
    voter = make_user(session, email="cu@example.com")
    session.add(Vote(item_id=a.id, user_id=voter.id, importance=2))
    session.flush()
    for item in (a, b):
        assert (await post_form(client, f"{path}/items", {"item": item.public_id}, page=path)).status_code == 303
    for url in ("https://github.com/acme/app/issues/88", "https://acme.atlassian.net/browse/PAY-142"):
        response = await post_form(client, f"{path}/links", {"url": url, "title": "", "estimate": ""}, page=path)
        assert response.status_code == 303

    page = (await client.get(path)).text
    assert "acme/app#88" in page and "PAY-142" in page
    assert "0% delivered" in page and "By count: 0 of 2 links are done" in page
    assert "<strong>1</strong> voter" in page
    session.query(BacklogLink).filter_by(key="PAY-142").update({"done": True})
    session.flush()
    assert "50% delivered" in (await client.get(path)).text

    # Each item's page says what delivers it, with the same progress.
    item_page = (await client.get(f"/admin/items/{a.public_id}")).text
    assert "Search cluster migration" in item_page and "50% delivered" in item_page


async def test_estimates_weigh_progress_when_every_link_has_one(client, session, pm):
    path = await _create(client)
    for url, estimate in (("https://github.com/acme/app/issues/1", "1"), ("https://github.com/acme/app/issues/2", "3")):
        await post_form(client, f"{path}/links", {"url": url, "estimate": estimate}, page=path)
    session.query(BacklogLink).filter_by(key="acme/app#2").update({"done": True})
    session.flush()
    page = (await client.get(path)).text
    assert "75% delivered" in page and "By estimate: 3 of 4 estimated points" in page


async def test_an_unrecognised_or_repeated_address_is_refused_and_kept(client, session, pm):
    path = await _create(client)
    refused = await post_form(client, f"{path}/links", {"url": "https://example.com/ticket/5", "title": "Mine"},
                              page=path)
    assert refused.status_code == 422
    assert "Paste the address of a GitHub or GitLab issue" in refused.text
    assert 'value="https://example.com/ticket/5"' in refused.text and 'value="Mine"' in refused.text
    await post_form(client, f"{path}/links", {"url": "https://linear.app/acme/issue/ENG-1"}, page=path)
    again = await post_form(client, f"{path}/links", {"url": "https://linear.app/acme/issue/ENG-1/x"}, page=path)
    assert again.status_code == 422 and "ENG-1 is linked here already." in again.text
    assert session.query(BacklogLink).count() == 1


async def test_links_on_an_item_and_its_settings(client, session, pm):
    item = make_item(session, title="Dark mode")
    path = f"/admin/items/{item.public_id}"
    response = await post_form(client, f"{path}/links", {"url": "https://gitlab.com/acme/web/-/issues/4"}, page=path)
    assert response.status_code == 303
    refused = await post_form(client, f"{path}/links", {"url": "nonsense"}, page=path)
    assert refused.status_code == 422 and 'value="nonsense"' in refused.text
    page = (await client.get(path)).text
    assert "acme/web#4" in page and "0% delivered" in page


async def test_customers_get_404_on_the_technology_roadmap(client, session):
    customer = make_user(session, email="c@example.com")
    sign_in(client, session, customer)
    for address in ("/admin/tech", "/admin/tech/new", "/admin/tech/hooks"):
        assert (await client.get(address)).status_code == 404


async def test_the_staff_sidebar_links_to_it(client, session, pm):
    assert '<a href="/admin/tech">Technology</a>' in (await client.get("/admin")).text


def test_progress_rule_counts_an_issue_once():
    links = [BacklogLink(kind=TrackerKind.jira, key="PAY-1", done=True, started=True, estimate=None),
             BacklogLink(kind=TrackerKind.jira, key="PAY-1", done=True, started=True, estimate=None),
             BacklogLink(kind=TrackerKind.jira, key="PAY-2", done=False, started=False, estimate=None)]
    progress = tech.progress_of(links)
    assert (progress.done, progress.total, progress.percent) == (1, 2, 50)
