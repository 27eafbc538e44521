"""A new role ends the person's sessions: a session opened as a customer (host-app SSO, an email link) never
becomes a staff session when the account is promoted, whatever promotes it."""

from __future__ import annotations

import re

import httpx
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import Identity, IdentityKind, Role
from app.deps import SESSION_COOKIE
from app.portal import service as portal
from tests.factories import make_admin, make_user
from tests.helpers.http import post_form, sign_in

LINK = re.compile(r"http://testserver/invitations/[A-Za-z0-9_\-]+")


def _browser(app) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_a_customer_session_does_not_become_an_admin_session_when_the_address_is_invited(app, client, session):
    # Someone signed in through the host app as an address that has no staff account yet...
    customer = make_user(session, email="victim@example.org", password=None)
    token = accounts.start_session(session, user=customer)
    async with _browser(app) as attacker:
        attacker.cookies.set(SESSION_COOKIE, token)
        assert (await attacker.get("/admin")).status_code == 404

        # ...then an admin invites that address as an admin, and its owner accepts in their own browser.
        sign_in(client, session, make_admin(session))
        invited = await post_form(client, "/admin/staff/invitations", {"email": "victim@example.org", "role": "admin"},
                                  page="/admin/staff")
        assert invited.status_code == 303
        path = LINK.search((await client.get("/admin/staff")).text).group(0).removeprefix("http://testserver")
        client.cookies.clear()
        accepted = await post_form(client, path, {"display_name": "Vic", "password": "a long password 1",
                                                  "confirm_password": "a long password 1"}, page=path)
        assert accepted.status_code == 303 and accepted.headers["location"] == "/admin"
        assert (await client.get("/admin")).status_code == 200  # the invitee is in

        # The session opened as a customer is over; it was never an admin's.
        assert accounts.load_session(session, token) is None
        after = await attacker.get("/admin")
        assert after.status_code == 303 and after.headers["location"].startswith("/login")  # signed out


def test_an_admin_changing_a_role_ends_that_persons_sessions(session):
    admin, person = make_admin(session), make_user(session, password=None)
    token = accounts.start_session(session, user=person)
    accounts.set_user_role(session, user=person, role=Role.pm, actor=admin)
    assert accounts.load_session(session, token) is None
    demoted_token = accounts.start_session(session, user=person)
    accounts.set_user_role(session, user=person, role=Role.customer, actor=admin)
    assert accounts.load_session(session, demoted_token) is None
    admin_token = accounts.start_session(session, user=admin)
    accounts.set_user_role(session, user=admin, role=Role.admin, actor=admin)  # no change: nothing ends
    assert accounts.load_session(session, admin_token) is not None


def test_a_provider_mapping_that_promotes_a_customer_ends_their_customer_sessions(session):
    admin = make_admin(session)
    portal.update_access(session, actor=admin, access=portal.Access(pm=portal.StaffRule(domains=("acme.example",))))
    customer = make_user(session, email="carol@acme.example", password=None)
    customer_token = accounts.start_session(session, user=customer)
    claims = accounts.IdentityClaims(kind=IdentityKind.oidc, issuer="https://id.acme.example", subject="carol",
                                     email="carol@acme.example", email_verified=True, name="Carol")
    user = accounts.sign_in_identity(session, claims=claims, access=portal.get_access(session))
    assert user.id == customer.id and user.role is Role.pm
    assert accounts.load_session(session, customer_token) is None
    assert session.scalar(select(Identity).where(Identity.user_id == user.id)) is not None
