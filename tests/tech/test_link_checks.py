"""Every path that stores a backlog link (the paste form, the API, the CSV import) goes through one check: the key
in its tracker's format, the address an http(s) address of that very issue. The pages never link a stored
address that is not http(s), whatever is in the database."""

from __future__ import annotations

import pytest

from app.tech.models import BacklogLink, Initiative, InitiativeStatus, TrackerKind
from tests.factories import make_item, make_pm
from tests.helpers.http import post_form, sign_in
from tests.helpers.tokens import bearer, create_token


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pia@example.com")
    sign_in(client, session, user)
    return user


def _initiative(session, pm) -> Initiative:  # type: ignore[no-untyped-def]
    initiative = Initiative(title="Payments v2", description="", owner_id=pm.id, status=InitiativeStatus.active,
                            items=[])
    session.add(initiative)
    session.commit()
    return initiative


@pytest.mark.parametrize(("body", "field", "message"), [
    ({"kind": "jira", "key": "PAY-9", "url": "javascript:alert(document.domain)"}, "url", "Paste the address"),
    ({"kind": "jira", "key": "PAY-9", "url": "https://evil.example/phish"}, "url", "Paste the address"),
    ({"kind": "jira", "key": "PAY-9", "url": "https://github.com/acme/app/issues/9"}, "url",
     "The address is of GitHub acme/app#9, not Jira PAY-9."),
    ({"kind": "jira", "key": "PAY-9", "url": "https://acme.atlassian.net/browse/PAY-10"}, "url",
     "The address is of Jira PAY-10, not Jira PAY-9."),
    ({"kind": "jira", "key": "javascript:alert(1)"}, "key", "is not a Jira key (like PAY-142)."),
    ({"kind": "github", "key": "acme/app"}, "key", "is not a GitHub key (like owner/repo#88)."),
    ({"kind": "linear", "key": "eng 1"}, "key", "is not a Linear key"),
])
async def test_the_api_refuses_a_bad_key_or_address_naming_the_field(client, session, pm, body, field, message):
    initiative = _initiative(session, pm)
    item = make_item(session, title="Faster exports")
    token = await create_token(client, name="CI", scope="write")
    for path in (f"/api/v1/initiatives/{initiative.id}/links", f"/api/v1/items/{item.public_id}/links"):
        response = await client.post(path, headers=bearer(token), json=body)
        assert response.status_code == 422, response.text
        assert message in response.json()["fields"][field]
    assert session.query(BacklogLink).count() == 0


async def test_the_api_takes_a_key_with_its_own_address_or_none(client, session, pm):
    initiative = _initiative(session, pm)
    token = await create_token(client, name="CI", scope="write")
    path = f"/api/v1/initiatives/{initiative.id}/links"
    for body in ({"kind": "jira", "key": "PAY-9", "url": "https://acme.atlassian.net/browse/PAY-9"},
                 {"kind": "github", "key": "acme/app#3", "url": "https://github.com/Acme/App/issues/3"},
                 {"kind": "linear", "key": "ENG-1"}):
        response = await client.post(path, headers=bearer(token), json=body)
        assert response.status_code == 201, response.text


async def test_the_paste_form_refuses_a_script_address(client, session, pm):
    initiative = _initiative(session, pm)
    response = await post_form(client, f"/admin/tech/{initiative.id}/links",
                               {"url": "javascript:alert(1)"}, page=f"/admin/tech/{initiative.id}")
    assert response.status_code == 422
    assert "Paste the address of a GitHub or GitLab issue" in response.text
    assert session.query(BacklogLink).count() == 0


async def test_the_import_refuses_a_script_address_or_a_foreign_one_by_line(client, session, pm):
    text = ("key,title,url,initiative,kind\n"
            "PAY-1,One,javascript:alert(1),Payments,\n"
            "PAY-2,Two,https://evil.example/phish,Payments,jira\n"
            "PAY-3,Three,https://github.com/acme/app/issues/3,Payments,jira\n"
            "javascript:alert(1),Four,,Payments,jira\n"
            "PAY-5,Five,https://acme.atlassian.net/browse/PAY-5,Payments,\n")
    response = await post_form(client, "/admin/tech/import", {"csv": text, "action": "preview"},
                               page="/admin/tech/import")
    assert response.status_code == 422
    assert "Line 2: “javascript:alert(1)” is not an issue&#39;s address." in response.text
    assert "Line 3: “https://evil.example/phish” is not an issue&#39;s address." in response.text
    assert "Line 4: The address is of GitHub acme/app#3, not Jira PAY-3." in response.text
    assert "Line 5: “javascript:alert(1)” is not a Jira key (like PAY-142)." in response.text
    assert "Line 6" not in response.text
    assert session.query(BacklogLink).count() == 0


async def test_a_stored_address_that_is_not_http_is_never_a_link(client, session, pm):
    initiative = _initiative(session, pm)
    item = make_item(session, title="Faster exports")
    session.add_all([  # as an older version of Ahead may have stored them
        BacklogLink(initiative_id=initiative.id, kind=TrackerKind.jira, key="PAY-9", url="javascript:alert(1)",
                    title="", status="open"),
        BacklogLink(item_id=item.id, kind=TrackerKind.jira, key="PAY-8", url=" JavaScript:alert(2)",
                    title="", status="open"),
        BacklogLink(item_id=item.id, kind=TrackerKind.jira, key="PAY-7",
                    url="https://acme.atlassian.net/browse/PAY-7", title="", status="open")])
    session.commit()
    for page in (f"/admin/tech/{initiative.id}", f"/admin/items/{item.public_id}"):
        text = (await client.get(page)).text
        assert "alert(" not in text
    item_page = (await client.get(f"/admin/items/{item.public_id}")).text
    assert 'href="https://acme.atlassian.net/browse/PAY-7"' in item_page and "PAY-8" in item_page
