"""The first set-up: a tracker's CSV export pasted, previewed (nothing written), then imported; refused rows
are named by line and block the import, and what was pasted stays in the box."""

from __future__ import annotations

import pytest

from app.tech.models import BacklogLink, Initiative
from tests.factories import make_pm
from tests.helpers.http import post_form, sign_in

JIRA_EXPORT = """\ufeffIssue key,Summary,Status,URL,Epic,Story Points
PAY-142,Card payments via the new provider,Done,https://acme.atlassian.net/browse/PAY-142,Payments v2,3
PAY-150,Refunds,In Progress,https://acme.atlassian.net/browse/PAY-150,Payments v2,1
,Stream exports,open,https://github.com/acme/app/issues/88,Export pipeline,
"""


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pat@example.com")
    sign_in(client, session, user)
    return user


async def test_preview_writes_nothing_then_import_makes_initiatives_and_links(client, session, pm):
    preview = await post_form(client, "/admin/tech/import", {"csv": JIRA_EXPORT, "action": "preview"},
                              page="/admin/tech/import")
    assert preview.status_code == 200
    assert "3 new links; 2 new initiatives: Payments v2, Export pipeline." in preview.text
    assert "acme/app#88" in preview.text and "Import 3 links" in preview.text
    assert session.query(Initiative).count() == 0 and session.query(BacklogLink).count() == 0

    done = await post_form(client, "/admin/tech/import", {"csv": JIRA_EXPORT, "action": "import"},
                           page="/admin/tech/import")
    assert done.status_code == 303
    listing = (await client.get("/admin/tech")).text
    assert "Imported 3 backlog links and 2 new initiatives." in listing
    payments = session.query(Initiative).filter_by(title="Payments v2").one()
    links = {link.key: link for link in session.query(BacklogLink).filter_by(initiative_id=payments.id)}
    assert links["PAY-142"].done and not links["PAY-150"].done and links["PAY-150"].started
    assert float(links["PAY-142"].estimate) == 3
    assert "75% delivered" in (await client.get(f"/admin/tech/{payments.id}")).text  # by estimate: 3 of 4

    again = await post_form(client, "/admin/tech/import", {"csv": JIRA_EXPORT, "action": "preview"},
                            page="/admin/tech/import")
    assert "0 new links, 3 already linked (left as they are); 0 new initiatives." in again.text
    assert "Nothing to import: every issue in it is linked already." in again.text
    assert 'value="import"' not in again.text  # no "Import 0 links" button


async def test_refused_rows_are_named_and_nothing_is_imported(client, session, pm):
    text = "key,title,initiative\nPAY-1,One,Payments\nnot a key,Two,Payments\nPAY-1,Again,Payments\nPAY-3,,\n"
    response = await post_form(client, "/admin/tech/import", {"csv": text, "action": "import"},
                               page="/admin/tech/import")
    assert response.status_code == 422
    assert "Line 3: Cannot tell the tracker of “not a key”" in response.text
    assert "Line 4: PAY-1 is listed twice for “Payments”." in response.text
    assert "Line 5: No initiative named." in response.text
    assert "not a key,Two,Payments" in response.text  # what was pasted stays
    assert "Import 1 link" not in response.text
    assert session.query(Initiative).count() == 0 and session.query(BacklogLink).count() == 0


async def test_a_file_without_the_columns(client, session, pm):
    response = await post_form(client, "/admin/tech/import", {"csv": "a,b\n1,2\n", "action": "preview"},
                               page="/admin/tech/import")
    assert response.status_code == 422 and "must name an initiative column" in response.text
    empty = await post_form(client, "/admin/tech/import", {"csv": " ", "action": "preview"}, page="/admin/tech/import")
    assert empty.status_code == 422 and "Paste the CSV first." in empty.text
