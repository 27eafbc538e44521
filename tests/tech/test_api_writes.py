"""Changing and deleting initiatives and backlog links through the API: read-write tokens only, the checks of
the admin forms (a title, a staff owner, a key in its tracker's format, an address of that very issue, no
javascript: address), audited under the token's owner."""

from __future__ import annotations

import pytest

from app.audit.models import AuditEvent
from app.tech.models import BacklogLink, Initiative
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import sign_in
from tests.helpers.tokens import bearer, create_token


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pia@example.com", display_name="Pia PM")
    sign_in(client, session, user)
    return user


@pytest.fixture
async def tokens(client, pm):  # type: ignore[no-untyped-def]
    return {"write": bearer(await create_token(client, name="CI", scope="write")),
            "read": bearer(await create_token(client, name="Report", scope="read"))}


async def _initiative(client, tokens) -> dict:  # type: ignore[no-untyped-def, type-arg]
    made = await client.post("/api/v1/initiatives", headers=tokens["write"], json={
        "title": "Export pipeline", "description": "Move **exports**.", "status": "active", "quarter": "2027-Q2"})
    assert made.status_code == 201, made.text
    return made.json()


def _audit(session, action: str) -> list[AuditEvent]:  # type: ignore[no-untyped-def]
    return list(session.query(AuditEvent).filter(AuditEvent.action == action))


async def test_patch_changes_only_the_fields_sent_and_is_audited(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    path = f"/api/v1/initiatives/{made['id']}"
    changed = await client.patch(path, headers=tokens["write"], json={"status": "done", "owner_id": pm.id})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["status"] == "done" and body["owner"] == {"id": pm.id, "name": "Pia PM"}
    assert body["title"] == "Export pipeline" and body["quarter"] == "2027-Q2"  # untouched
    cleared = (await client.patch(path, headers=tokens["write"], json={"quarter": None, "owner_id": None})).json()
    assert cleared["quarter"] is None and cleared["owner"] is None
    events = _audit(session, "initiative.updated")
    assert len(events) == 2 and {e.actor_label for e in events} == {"pia@example.com"}
    assert events[0].changes["status"] == ["active", "done"]
    same = await client.patch(path, headers=tokens["write"], json={"title": "Export pipeline"})
    assert same.status_code == 200 and len(_audit(session, "initiative.updated")) == 2  # nothing changed


async def test_patch_refuses_what_the_editor_refuses(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    path = f"/api/v1/initiatives/{made['id']}"
    customer = make_user(session, email="cu@example.com")
    not_staff = await client.patch(path, headers=tokens["write"], json={"owner_id": customer.id})
    assert not_staff.status_code == 422
    assert not_staff.json()["fields"]["owner_id"] == "Choose a staff member, or nobody."
    empty = await client.patch(path, headers=tokens["write"], json={"title": ""})
    assert empty.status_code == 422 and "title" in empty.json()["fields"]
    two_lines = await client.patch(path, headers=tokens["write"], json={"title": "One\nTwo"})
    assert two_lines.status_code == 422 and "title" in two_lines.json()["fields"]
    unknown = await client.patch(path, headers=tokens["write"], json={"colour": "red"})
    assert unknown.status_code == 422
    for field in ("title", "description", "status"):  # null is not "unchanged": the client is told (a walk-through)
        null = await client.patch(path, headers=tokens["write"], json={field: None})
        assert null.status_code == 422 and field in null.json()["fields"], (field, null.text)
    assert (await client.patch("/api/v1/initiatives/999999", headers=tokens["write"], json={})).status_code == 404
    session.expire_all()
    assert session.get(Initiative, made["id"]).owner_id is None


async def test_delete_removes_the_initiative_and_its_links_but_not_its_items(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    item = make_item(session, title="Faster exports")
    path = f"/api/v1/initiatives/{made['id']}"
    await client.post(f"{path}/items", headers=tokens["write"], json={"item": item.public_id})
    await client.post(f"{path}/links", headers=tokens["write"], json={"kind": "jira", "key": "PAY-1"})
    assert (await client.delete(path, headers=tokens["read"])).status_code == 403
    assert (await client.delete(path, headers=tokens["write"])).status_code == 204
    assert (await client.get(path, headers=tokens["read"])).status_code == 404
    assert session.query(Initiative).count() == 0 and session.query(BacklogLink).count() == 0
    assert (await client.get(f"/api/v1/items/{item.public_id}/delivery", headers=tokens["read"])).status_code == 200
    assert [e.actor_label for e in _audit(session, "initiative.deleted")] == ["pia@example.com"]
    assert (await client.delete(path, headers=tokens["write"])).status_code == 404


async def test_read_tokens_cannot_change_or_delete_anything(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    path = f"/api/v1/initiatives/{made['id']}"
    link = (await client.post(f"{path}/links", headers=tokens["write"], json={"kind": "jira", "key": "PAY-1"})).json()
    item = make_item(session)
    own = (await client.post(f"/api/v1/items/{item.public_id}/links", headers=tokens["write"],
                             json={"kind": "jira", "key": "PAY-2"})).json()
    attempts = [
        ("PATCH", path, {"title": "Renamed"}),
        ("DELETE", path, None),
        ("PATCH", f"{path}/links/{link['id']}", {"done": True}),
        ("DELETE", f"{path}/links/{link['id']}", None),
        ("PATCH", f"/api/v1/items/{item.public_id}/links/{own['id']}", {"done": True}),
        ("DELETE", f"/api/v1/items/{item.public_id}/links/{own['id']}", None),
    ]
    for method, url, body in attempts:
        answer = await client.request(method, url, headers=tokens["read"], json=body)
        assert answer.status_code == 403, (method, url, answer.text)
        assert (await client.request(method, url, json=body)).status_code == 401  # no token at all
    session.expire_all()
    assert session.get(Initiative, made["id"]).title == "Export pipeline"
    assert session.query(BacklogLink).filter(BacklogLink.done.is_(True)).count() == 0
    assert session.query(BacklogLink).count() == 2


async def test_patch_a_link_status_done_and_estimate(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    path = f"/api/v1/initiatives/{made['id']}"
    link = (await client.post(f"{path}/links", headers=tokens["write"],
                              json={"url": "https://github.com/acme/app/issues/88", "estimate": 3})).json()
    changed = await client.patch(f"{path}/links/{link['id']}", headers=tokens["write"],
                                 json={"done": True, "title": "Stream the export"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["done"] and body["started"] and body["status"] == "done" and body["title"] == "Stream the export"
    assert body["key"] == "acme/app#88" and body["estimate"] == 3.0  # untouched
    no_estimate = (await client.patch(f"{path}/links/{link['id']}", headers=tokens["write"],
                                      json={"estimate": None, "status": "Merged"})).json()
    assert no_estimate["estimate"] is None and no_estimate["status"] == "Merged"
    for field in ("url", "kind", "key", "title", "status", "done"):  # only the estimate is removed by a null
        null = await client.patch(f"{path}/links/{link['id']}", headers=tokens["write"], json={field: None})
        assert null.status_code == 422 and field in null.json()["fields"], (field, null.text)
    progress = (await client.get(path, headers=tokens["read"])).json()["progress"]
    assert progress["percent"] == 100 and progress["by_estimate"] is False
    events = _audit(session, "backlog_link.updated")
    assert len(events) == 2 and events[0].actor_label == "pia@example.com"
    assert events[0].changes["github acme/app#88: done"] == [False, True]


async def test_patch_a_link_checks_the_address_and_key_as_the_form_does(client, session, pm, tokens):
    made = await _initiative(client, tokens)
    path = f"/api/v1/initiatives/{made['id']}"
    first = (await client.post(f"{path}/links", headers=tokens["write"],
                               json={"url": "https://github.com/acme/app/issues/88"})).json()
    second = (await client.post(f"{path}/links", headers=tokens["write"], json={"kind": "jira", "key": "PAY-1"})).json()
    url = f"{path}/links/{first['id']}"

    script = await client.patch(url, headers=tokens["write"], json={"url": "javascript:alert(1)"})
    assert script.status_code == 422 and "GitHub or GitLab" in script.json()["fields"]["url"]
    elsewhere = await client.patch(url, headers=tokens["write"], json={"url": "https://example.com/acme/app/issues/88"})
    assert elsewhere.status_code == 422 and "url" in elsewhere.json()["fields"]
    bad_key = await client.patch(f"{path}/links/{second['id']}", headers=tokens["write"], json={"key": "pay one"})
    assert bad_key.status_code == 422
    assert bad_key.json()["fields"]["key"] == "“pay one” is not a Jira key (like PAY-142)."
    mismatch = await client.patch(url, headers=tokens["write"], json={"key": "acme/app#90"})
    assert mismatch.status_code == 422
    assert mismatch.json()["fields"]["url"] == "The address is of GitHub acme/app#88, not GitHub acme/app#90."
    taken = await client.patch(f"{path}/links/{second['id']}", headers=tokens["write"],
                               json={"url": "https://github.com/ACME/App/issues/88"})
    assert taken.status_code == 422 and taken.json()["fields"]["key"] == "ACME/App#88 is linked here already."

    moved = await client.patch(url, headers=tokens["write"], json={"url": "https://github.com/acme/app/pull/91"})
    assert moved.status_code == 200 and moved.json()["key"] == "acme/app#91"
    session.expire_all()
    assert {link.key for link in session.query(BacklogLink)} == {"acme/app#91", "PAY-1"}
    other = (await _initiative(client, tokens))["id"]
    assert (await client.patch(f"/api/v1/initiatives/{other}/links/{first['id']}", headers=tokens["write"],
                               json={"done": True})).status_code == 404  # not that initiative's link


async def test_an_items_links_are_changed_and_removed(client, session, pm, tokens):
    item = make_item(session, title="Faster exports")
    base = f"/api/v1/items/{item.public_id}/links"
    link = (await client.post(base, headers=tokens["write"], json={"kind": "linear", "key": "ENG-12"})).json()
    done = await client.patch(f"{base}/{link['id']}", headers=tokens["write"], json={"done": True})
    assert done.status_code == 200 and done.json()["done"]
    delivery = (await client.get(f"/api/v1/items/{item.public_id}/delivery", headers=tokens["read"])).json()
    assert delivery["progress"]["percent"] == 100
    assert (await client.delete(f"{base}/{link['id']}", headers=tokens["write"])).status_code == 204
    assert session.query(BacklogLink).count() == 0
    assert [e.action for e in session.query(AuditEvent).filter(AuditEvent.entity_type == "item")
            .order_by(AuditEvent.id)][-3:] == ["backlog_link.added", "backlog_link.updated", "backlog_link.removed"]


async def test_the_new_writes_are_documented(client):
    spec = (await client.get("/openapi.json")).json()["paths"]
    assert {"get", "patch", "delete"} <= set(spec["/api/v1/initiatives/{id}"])
    for path in ("/api/v1/initiatives/{id}/links/{link_id}", "/api/v1/items/{id}/links/{link_id}"):
        assert {"patch", "delete"} <= set(spec[path])
        assert "403" in spec[path]["patch"]["responses"] and "422" in spec[path]["patch"]["responses"]
    refused = await client.put("/api/v1/initiatives/1")
    assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD, PATCH, DELETE"
