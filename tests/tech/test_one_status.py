"""One status per tracker issue: an issue Ahead already tracks, linked to another initiative or item (API or
admin), starts with what is known of it; later news, from a webhook or a PATCH, reaches every link of it; an
item's delivery lists each link once per owner and counts each issue once."""

from __future__ import annotations

import pytest

from app.tech.models import BacklogLink, HookKind, Initiative
from tests.factories import make_item, make_pm
from tests.helpers.http import sign_in
from tests.helpers.tokens import bearer, create_token
from tests.helpers.trackers import github_headers, make_hook, payload

ISSUE = "https://github.com/acme/app/issues/88"


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pia@example.com")
    sign_in(client, session, user)
    return user


@pytest.fixture
async def write(client, pm):  # type: ignore[no-untyped-def]
    return bearer(await create_token(client, name="CI", scope="write"))


async def _initiative(client, write, title: str) -> int:  # type: ignore[no-untyped-def]
    made = await client.post("/api/v1/initiatives", headers=write, json={"title": title, "status": "active"})
    assert made.status_code == 201, made.text
    return made.json()["id"]


async def _close_by_webhook(client, session, pm, settings) -> None:  # type: ignore[no-untyped-def]
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    body = payload("github_issue_closed.json")  # acme/app#88, closed as completed, updated 2026-12-03T08:00Z
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert answer.json()["outcome"] == "matched", answer.text


async def test_a_closed_issue_linked_to_a_second_initiative_is_closed_there_too(client, session, pm, write, settings):
    first = await _initiative(client, write, "Export pipeline")
    assert (await client.post(f"/api/v1/initiatives/{first}/links", headers=write, json={"url": ISSUE})).status_code == 201
    await _close_by_webhook(client, session, pm, settings)
    second = await _initiative(client, write, "Bucket storage")
    added = await client.post(f"/api/v1/initiatives/{second}/links", headers=write, json={"url": ISSUE})
    assert added.status_code == 201, added.text
    link = added.json()
    assert (link["status"], link["done"], link["started"]) == ("closed", True, True)
    assert link["title"] == "Stream exports to the customer's bucket"  # what the webhook said of it
    shown = (await client.get(f"/api/v1/initiatives/{second}", headers=write)).json()
    assert shown["progress"]["percent"] == 100
    row = session.get(BacklogLink, link["id"])
    assert row is not None and row.tracker_updated_at is not None  # an older "reopened" cannot win here either


async def test_the_admin_paste_copies_the_known_status(client, session, pm, settings):
    initiative = Initiative(title="Export pipeline", description="", items=[])
    session.add(initiative)
    session.flush()
    session.add(BacklogLink(initiative_id=initiative.id, kind="github", key="acme/app#88", url=ISSUE, title="",
                            status="open", done=False, started=False))
    session.flush()
    await _close_by_webhook(client, session, pm, settings)
    item = make_item(session, title="Exports to S3")
    page = await client.get(f"/admin/items/{item.public_id}")
    token = page.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
    pasted = await client.post(f"/admin/items/{item.public_id}/links", data={"url": ISSUE, "csrf_token": token})
    assert pasted.status_code == 303, pasted.text
    own = session.query(BacklogLink).filter_by(item_id=item.id).one()
    assert own.done and own.status == "closed"
    page = await client.get(f"/admin/items/{item.public_id}")
    assert "100% delivered" in page.text


async def test_later_news_and_a_patch_reach_every_link_and_the_delivery_counts_each_issue_once(
        client, session, pm, write, settings):
    item = make_item(session, title="Exports to S3")
    session.commit()
    ids = [await _initiative(client, write, title) for title in ("Export pipeline", "Bucket storage")]
    for initiative_id in ids:
        assert (await client.post(f"/api/v1/initiatives/{initiative_id}/items", headers=write,
                                  json={"item": item.public_id})).status_code == 200
        assert (await client.post(f"/api/v1/initiatives/{initiative_id}/links", headers=write,
                                  json={"url": ISSUE})).status_code == 201
    own = await client.post(f"/api/v1/items/{item.public_id}/links", headers=write,
                            json={"url": "https://github.com/Acme/App/issues/88"})  # the same issue, another case
    assert own.status_code == 201
    other = await client.post(f"/api/v1/items/{item.public_id}/links", headers=write,
                              json={"url": "https://github.com/acme/app/issues/90"})
    assert other.status_code == 201
    await _close_by_webhook(client, session, pm, settings)
    delivery = (await client.get(f"/api/v1/items/{item.public_id}/delivery", headers=write)).json()
    listed = delivery["links"] + delivery["via_initiatives"]
    eighty_eight = [link for link in listed if link["key"].lower() == "acme/app#88"]
    # Once per owner (the item, each initiative), each saying the same; counted once.
    assert sorted((link["initiative"] or 0) for link in eighty_eight) == sorted([0, *ids])
    assert {(link["status"], link["done"]) for link in eighty_eight} == {("closed", True)}
    assert (delivery["progress"]["done"], delivery["progress"]["total"]) == (1, 2)
    # A PATCH of done on one link is the issue's status: every link of it follows.
    patched = await client.patch(f"/api/v1/items/{item.public_id}/links/{own.json()['id']}", headers=write,
                                 json={"done": False, "status": "reopened"})
    assert patched.status_code == 200, patched.text
    session.expire_all()
    rows = session.query(BacklogLink).filter(BacklogLink.key.in_(["acme/app#88", "Acme/App#88"])).all()
    assert len(rows) == 3 and {(r.status, r.done) for r in rows} == {("reopened", False)}
    delivery = (await client.get(f"/api/v1/items/{item.public_id}/delivery", headers=write)).json()
    assert (delivery["progress"]["done"], delivery["progress"]["total"]) == (0, 2)
