"""The technology roadmap's API: staff tokens only (read, or read-write to change), the same rules and audit as
the pages; no session cookie reaches it."""

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


async def test_a_write_token_creates_links_and_reads_them_back(client, session, pm):
    token = await create_token(client, name="CI", scope="write")
    client.cookies.clear()  # the API ignores cookies; prove it works without any
    item = make_item(session, title="Faster exports")
    created = await client.post("/api/v1/initiatives", headers=bearer(token), json={
        "title": "Export pipeline", "status": "active", "quarter": "2027-Q2", "owner_id": pm.id})
    assert created.status_code == 201, created.text
    initiative_id = created.json()["id"]
    assert created.json()["owner"] == {"id": pm.id, "name": "Pia PM"} and created.json()["quarter"] == "2027-Q2"

    path = f"/api/v1/initiatives/{initiative_id}"
    assert (await client.post(f"{path}/items", headers=bearer(token), json={"item": item.public_id})).status_code == 200
    by_url = await client.post(f"{path}/links", headers=bearer(token),
                               json={"url": "https://github.com/acme/app/issues/88", "estimate": 2})
    by_key = await client.post(f"{path}/links", headers=bearer(token),
                               json={"kind": "jira", "key": "PAY-142", "done": True, "estimate": 2})
    assert by_url.json()["key"] == "acme/app#88" and by_key.status_code == 201
    again = await client.post(f"{path}/links", headers=bearer(token), json={"kind": "jira", "key": "PAY-142"})
    assert again.status_code == 422 and "PAY-142 is linked here already." in again.json()["fields"]["url"]
    unknown = await client.post(f"{path}/links", headers=bearer(token), json={"url": "https://example.com/x"})
    assert unknown.status_code == 422 and "GitHub or GitLab" in unknown.json()["fields"]["url"]

    read = (await client.get(path, headers=bearer(token))).json()
    assert read["items"] == [item.public_id]
    assert read["progress"]["percent"] == 50 and read["progress"]["by_estimate"] is True
    delivery = (await client.get(f"/api/v1/items/{item.public_id}/delivery", headers=bearer(token))).json()
    assert delivery["initiatives"] == [initiative_id] and len(delivery["via_initiatives"]) == 2

    removed = await client.delete(f"{path}/links/{by_url.json()['id']}", headers=bearer(token))
    assert removed.status_code == 204
    assert session.query(BacklogLink).count() == 1
    actors = {e.actor_label for e in session.query(AuditEvent).filter(AuditEvent.entity_type == "initiative")}
    assert actors == {"pia@example.com"}


async def test_a_read_token_reads_but_cannot_write(client, session, pm):
    token = await create_token(client, name="Report", scope="read")
    listing = await client.get("/api/v1/initiatives", headers=bearer(token))
    assert listing.status_code == 200 and listing.json() == []
    refused = await client.post("/api/v1/initiatives", headers=bearer(token), json={"title": "X"})
    assert refused.status_code == 403
    assert session.query(Initiative).count() == 0


async def test_no_token_no_api_not_even_for_signed_in_staff_or_customers(client, session, pm):
    assert (await client.get("/api/v1/initiatives")).status_code == 401  # the PM's session cookie is not a token
    customer = make_user(session, email="cu@example.com")
    sign_in(client, session, customer)
    assert (await client.get("/api/v1/initiatives")).status_code == 401
    assert (await client.post("/api/v1/initiatives", json={"title": "X"})).status_code in (401, 403)
