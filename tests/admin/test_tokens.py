"""The API tokens page: everyone their own tokens, admins everyone's; a refused form keeps what was typed."""

from __future__ import annotations

from sqlalchemy import select

from app.accounts.models import ApiToken
from app.audit.models import AuditEvent
from tests.factories import make_admin, make_pm, make_user
from tests.helpers.http import post_form, sign_in
from tests.helpers.tokens import create_token


async def test_a_refused_form_says_why_and_keeps_what_was_typed(client, session):
    sign_in(client, session, make_pm(session))
    response = await post_form(client, "/admin/tokens", {"name": "", "scope": "admin", "expires_in_days": "soon"},
                               page="/admin/tokens")
    assert response.status_code == 422
    assert "Give the token a name" in response.text and "Choose read, or read and write." in response.text
    assert "A whole number of days from 1 to 3650" in response.text and 'value="soon"' in response.text
    assert session.scalar(select(ApiToken)) is None


async def test_created_listed_with_scope_and_expiry_and_audited(client, session):
    pm = make_pm(session, display_name="Pia PM")
    sign_in(client, session, pm)
    await create_token(client, name="Quarterly review", scope="write", days="30")
    row = session.scalars(select(ApiToken)).one()
    assert (row.user_id, row.scope.value, row.name) == (pm.id, "write", "Quarterly review")
    assert row.expires_at is not None and 29 <= (row.expires_at - row.created_at).days <= 30
    page = await client.get("/admin/tokens")
    assert "Quarterly review" in page.text and "Read and write" in page.text and "Never" in page.text  # not used yet
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.created")).one()
    assert event.actor_id == pm.id and event.changes["scope"] == [None, "write"]
    await post_form(client, f"/admin/tokens/{row.id}/revoke", {}, page="/admin/tokens")
    assert session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.revoked")).one().actor_id == pm.id
    assert "Revoked" in (await client.get("/admin/tokens")).text


async def test_the_revocation_is_audited_with_only_what_changed(client, session):
    admin = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, make_pm(session, email="pia@example.com"))
    await create_token(client, name="Quarterly review")
    sign_in(client, session, admin)
    row = session.scalars(select(ApiToken)).one()
    await post_form(client, f"/admin/tokens/{row.id}/revoke", {}, page="/admin/tokens")
    event = session.scalars(select(AuditEvent).where(AuditEvent.action == "api_token.revoked")).one()
    assert event.changes == {"revoked": [False, True]}
    page = (await client.get("/admin/audit")).text
    assert f"Quarterly review ({row.prefix}…) of pia@example.com" in page
    entry = page.split("of pia@example.com", 1)[1].split("</tr>", 1)[0]
    assert entry.count("<del>") == 1 and "<del>no</del>" in entry  # revoked no → yes, and no "owner" → itself


async def test_a_pm_manages_their_own_and_an_admin_everyones(client, session):
    admin = make_admin(session, display_name="Ada Admin")
    pm = make_pm(session, display_name="Pia PM")
    sign_in(client, session, admin)
    await create_token(client, name="Admin export")
    sign_in(client, session, pm)
    await create_token(client, name="Pia report")
    admins_token = session.scalar(select(ApiToken).where(ApiToken.user_id == admin.id))

    page = await client.get("/admin/tokens")
    assert "Pia report" in page.text and "Admin export" not in page.text
    response = await post_form(client, f"/admin/tokens/{admins_token.id}/revoke", {}, page="/admin/tokens")
    assert response.status_code == 404
    session.refresh(admins_token)
    assert admins_token.revoked_at is None

    sign_in(client, session, admin)
    page = await client.get("/admin/tokens")
    assert "Pia report" in page.text and "Admin export" in page.text and "Pia PM" in page.text
    pias = session.scalar(select(ApiToken).where(ApiToken.user_id == pm.id))
    response = await post_form(client, f"/admin/tokens/{pias.id}/revoke", {}, page="/admin/tokens")
    assert response.status_code == 303
    session.refresh(pias)
    assert pias.revoked_at is not None


async def test_customers_never_reach_the_tokens_page(client, session):
    sign_in(client, session, make_user(session, password=None))
    assert (await client.get("/admin/tokens")).status_code == 404
    response = await post_form(client, "/admin/tokens", {"name": "x", "scope": "read"})
    assert response.status_code == 404
    assert session.scalar(select(ApiToken)) is None
