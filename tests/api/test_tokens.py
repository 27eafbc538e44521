"""Staff API tokens as an attack surface: where a token is (not) read, when it stops working, what is kept
and logged of it, and who reaches the desk API at all."""

from __future__ import annotations

import hashlib
import logging
from datetime import timedelta

import pytest
from sqlalchemy import select, text, update

from app.accounts import tokens as token_service
from app.accounts.models import ApiToken, Role
from app.audit.models import AuditEvent
from app.db import utcnow
from app.deps import SESSION_COOKIE
from tests.factories import make_admin, make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in
from tests.helpers.tokens import bearer, create_token

DESK = "/api/v1/desk"


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


async def as_pm_with_token(client, session, **kwargs):  # type: ignore[no-untyped-def]
    pm = make_pm(session, email="pia@example.com", display_name="Pia PM")
    sign_in(client, session, pm)
    token = await create_token(client, **kwargs)
    return pm, token


class TestWhereATokenIsRead:
    async def test_only_the_authorization_header_carries_it(self, client, session, admin):
        token = await create_token(client)
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 200
        for query in ("access_token", "token", "api_token", "authorization"):
            response = await client.get(f"{DESK}?{query}={token}")
            assert response.status_code == 401, query
        for cookie in (SESSION_COOKIE, "access_token", "Authorization", "token"):
            client.cookies.clear()
            client.cookies.set(cookie, token)
            assert (await client.get(DESK)).status_code == 401, cookie
        client.cookies.clear()
        for header in (f"Basic {token}", token, "Bearer", "Bearer ", f"Token {token}", f"Bearer {token}x"):
            response = await client.get(DESK, headers={"Authorization": header})
            assert response.status_code == 401, header
            assert response.headers["www-authenticate"].startswith("Bearer")

    async def test_no_session_reaches_the_desk_api_customer_or_staff(self, client, session, admin):
        x = make_item(session)
        # A staff session is not a token: the desk API answers 401 even to a signed-in admin's browser.
        assert (await client.get(DESK)).status_code == 401
        customer = make_user(session, email="cus@example.com", password=None)
        client.cookies.clear()
        sign_in(client, session, customer)
        for path in (DESK, f"/api/v1/items/{x.public_id}/demand"):
            response = await client.get(path)
            assert response.status_code == 401 and "Weighted" not in response.text
        response = await client.put(f"/api/v1/items/{x.public_id}/estimate", json={"rice_confidence": 10})
        assert response.status_code == 401

    async def test_a_token_cannot_vote_votes_are_peoples(self, client, session, admin):
        x = make_item(session)
        token = await create_token(client, scope="write")
        client.cookies.clear()
        response = await client.post(f"/api/v1/items/{x.public_id}/vote", headers=bearer(token),
                                     json={"importance": "critical"})
        assert response.status_code in (401, 403)
        assert x.vote_count == 0


class TestWhenATokenStopsWorking:
    async def test_revoked(self, client, session, admin):
        token = await create_token(client)
        row = session.scalars(select(ApiToken)).one()
        response = await post_form(client, f"/admin/tokens/{row.id}/revoke", {}, page="/admin/tokens")
        assert response.status_code == 303
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 401

    async def test_expired(self, client, session, admin):
        token = await create_token(client, days="1")
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 200
        session.execute(update(ApiToken).values(expires_at=utcnow() - timedelta(seconds=1)))
        session.expire_all()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 401

    async def test_the_owner_disabled_or_no_longer_staff_and_it_stays_dead(self, client, session, admin):
        pm, token = await as_pm_with_token(client, session)
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 200
        sign_in(client, session, admin)
        response = await post_form(client, f"/admin/staff/{pm.id}/active", {"active": "0"}, page="/admin/staff")
        assert response.status_code == 303
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 401
        sign_in(client, session, admin)
        await post_form(client, f"/admin/staff/{pm.id}/active", {"active": "1"}, page="/admin/staff")
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 401  # enabling again revives nothing

        # Losing the staff role, even without the service's revocation, closes the token at once.
        other = make_pm(session, email="oli@example.com")
        sign_in(client, session, other)
        second = await create_token(client)
        client.cookies.clear()
        other.role = Role.customer
        session.flush()
        assert (await client.get(DESK, headers=bearer(second))).status_code == 401


class TestWhatIsKept:
    async def test_shown_once_stored_as_a_hash_never_logged(self, client, session, admin, caplog):
        caplog.set_level(logging.DEBUG)
        response = await post_form(client, "/admin/tokens", {"name": "Nightly", "scope": "read",
                                                             "expires_in_days": ""}, page="/admin/tokens")
        assert response.status_code == 200 and response.headers["cache-control"] == "no-store"
        token = response.text.split('id="new-token"', 1)[1].split('value="', 1)[1].split('"', 1)[0]
        assert token.startswith("ahead_") and len(token) >= 40
        assert token not in response.headers.get("set-cookie", "")
        row = session.scalars(select(ApiToken)).one()
        assert row.token_hash == hashlib.sha256(token.encode()).hexdigest() and token.startswith(row.prefix)
        listing = await client.get("/admin/tokens")
        assert token not in listing.text and f"{row.prefix}…" in listing.text
        client.cookies.clear()
        await client.get(DESK, headers=bearer(token))
        await client.get(DESK, headers=bearer(token + "x"))
        assert token not in caplog.text
        dump = " ".join(str(v) for v in session.execute(text("SELECT * FROM api_tokens")).one())
        assert token not in dump
        for event in session.scalars(select(AuditEvent)):
            assert token not in f"{event.changes} {event.entity_label}"

    async def test_the_compare_is_constant_time(self, client, session, admin, monkeypatch):
        token = await create_token(client)
        seen = []
        real = token_service.hmac.compare_digest

        def spy(a, b):  # type: ignore[no-untyped-def]
            seen.append((a, b))
            return real(a, b)

        monkeypatch.setattr(token_service.hmac, "compare_digest", spy)
        client.cookies.clear()
        assert (await client.get(DESK, headers=bearer(token))).status_code == 200
        assert seen == [(hashlib.sha256(token.encode()).hexdigest(),) * 2]

    async def test_last_use_is_written_at_most_once_a_minute(self, client, session, admin):
        token = await create_token(client)
        row = session.scalars(select(ApiToken)).one()
        assert row.last_used_at is None
        client.cookies.clear()
        await client.get(DESK, headers=bearer(token))
        session.expire_all()
        first = session.scalars(select(ApiToken)).one().last_used_at
        assert first is not None
        await client.get(DESK, headers=bearer(token))
        session.expire_all()
        assert session.scalars(select(ApiToken)).one().last_used_at == first
        session.execute(update(ApiToken).values(last_used_at=utcnow() - timedelta(minutes=2)))
        await client.get(DESK, headers=bearer(token))
        session.expire_all()
        assert session.scalars(select(ApiToken)).one().last_used_at > first - timedelta(seconds=1)


    async def test_a_write_request_notes_the_use_in_its_own_transaction(self, client, session, admin):
        x = make_item(session)
        token = await create_token(client, scope="write")
        client.cookies.clear()
        response = await client.put(f"/api/v1/items/{x.public_id}/estimate", headers=bearer(token),
                                    json={"rice_confidence": 10, "effort": 1})
        assert response.status_code == 200, response.text
        session.expire_all()
        assert session.scalars(select(ApiToken)).one().last_used_at is not None


class TestOpenApi:
    async def test_the_description_names_the_scheme_on_the_desk_endpoints(self, client):
        schema = (await client.get("/openapi.json")).json()
        scheme = schema["components"]["securitySchemes"]["StaffToken"]
        assert (scheme["type"], scheme["scheme"]) == ("http", "bearer")
        for path, method in (("/api/v1/desk", "get"), ("/api/v1/items/{id}/demand", "get"),
                             ("/api/v1/items/{id}/estimate", "put")):
            operation = schema["paths"][path][method]
            assert operation["security"] == [{"StaffToken": []}], path
            assert "401" in operation["responses"]
