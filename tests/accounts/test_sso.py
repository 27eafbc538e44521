"""Host-app SSO: the vendor's app signs its user in with a short-lived JWT; every bad token gets a
clear page and leaves no account or session behind."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey
from sqlalchemy import func, select

from app.accounts.models import Identity, IdentityKind, Role, User, UserSession
from app.accounts.sso import RedactTokens, SsoConfigError, load_keys
from app.config import Settings
from app.organisations.models import Organisation, Segment
from app.roadmap.models import Visibility
from tests.factories import make_item, make_user
from tests.helpers.http import post_form, sign_in
from tests.helpers.sso import claims, hs256, sso, sso_settings

pytestmark = pytest.mark.anyio

RSA_KEY = RSAKey.generate_key(2048)
EC_KEY = ECKey.generate_key("P-256")


@pytest.fixture
def settings(database_url):
    return sso_settings(database_url)


def b64(data):
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def count(session, model):
    return session.scalar(select(func.count()).select_from(model))


class TestValidToken:
    async def test_creates_the_customer_and_their_organisation_and_signs_them_in(self, client, session):
        enterprise = Segment(slug="enterprise", name="Enterprise")
        session.add(enterprise)
        session.flush()
        secret_item = make_item(session, visibility=Visibility.customers, segments=[enterprise],
                                title="Enterprise-only audit trail")
        before = await client.get(f"/items/{secret_item.public_id}")
        assert before.status_code == 404

        token = hs256(claims(company={"id": "acme-1", "name": "Acme Ltd", "segment": "Enterprise",
                                      "revenue": 120000}))
        response = await sso(client, token, next_=f"/items/{secret_item.public_id}")

        assert response.status_code == 303
        assert response.headers["location"] == f"/items/{secret_item.public_id}"
        user = session.scalar(select(User).where(User.email == "dana@bigco.example"))
        assert user is not None and user.display_name == "Dana Host"
        organisation = session.get(Organisation, user.organisation_id)
        assert organisation.name == "Acme Ltd" and organisation.external_id == "acme-1"
        assert organisation.segment_id == enterprise.id and organisation.revenue == 120000
        identity = session.scalar(select(Identity).where(Identity.user_id == user.id))
        assert (identity.kind, identity.issuer, identity.subject) == (IdentityKind.sso, "sso", "host-user-42")

        page = await client.get(response.headers["location"], follow_redirects=True)
        assert page.status_code == 200
        assert "Enterprise-only audit trail" in page.text and "Dana Host" in page.text

    async def test_a_second_visit_updates_the_organisation_and_keeps_one_account(self, client, session):
        await sso(client, hs256(claims(company={"id": "acme-1", "name": "Acme", "segment": "Starter"})))
        again = await sso(client, hs256(claims(company={"id": "acme-1", "name": "Acme Group", "segment": "Pro"})))
        assert again.status_code == 303
        assert count(session, User) == 1 and count(session, Organisation) == 1
        organisation = session.scalar(select(Organisation))
        assert organisation.name == "Acme Group"
        assert session.get(Segment, organisation.segment_id).name == "Pro"

    async def test_links_to_an_existing_account_with_the_same_email(self, client, session):
        existing = make_user(session, email="dana@bigco.example", display_name="Dana Before")
        response = await sso(client, hs256(claims()))
        assert response.status_code == 303
        assert session.scalar(select(Identity.user_id).where(Identity.kind == IdentityKind.sso)) == existing.id

    @pytest.mark.parametrize("target", ["https://evil.example/phish", "//evil.example", "/\\evil.example"])
    async def test_next_never_leaves_the_site(self, client, target):
        response = await sso(client, hs256(claims()), next_=target)
        assert response.status_code == 303
        assert response.headers["location"] == "/"

    async def test_a_next_too_long_for_any_address_is_dropped_and_the_sign_in_goes_through(self, client):
        response = await sso(client, hs256(claims()), next_="/" + "a" * 2001)
        assert response.status_code == 303 and response.headers["location"] == "/"

    async def test_a_head_of_the_link_spends_nothing_and_the_browsers_get_signs_in(self, client, session):
        """Link checkers, scanners and previews send HEAD: it must not sign anyone in or spend the one-time token
        (a walk-through's HEAD did both, and the person's own click then failed as a replay)."""
        token = hs256(claims())
        head = await client.head("/sso/jwt", params={"token": token, "next": "/"})
        assert head.status_code == 405 and head.headers["allow"] == "GET"
        assert "set-cookie" not in head.headers
        assert count(session, User) == 0 and count(session, UserSession) == 0
        response = await sso(client, token)
        assert response.status_code == 303 and response.cookies.get("ahead_session")
        assert count(session, User) == 1

    async def test_a_new_session_id_at_each_sign_in(self, client, session):
        first = (await sso(client, hs256(claims()))).cookies.get("ahead_session")
        second = (await sso(client, hs256(claims()))).cookies.get("ahead_session")
        assert first and second and first != second
        assert count(session, UserSession) == 1


class TestStaffAccounts:
    """The host app vouches for its customers; it cannot open a PM's or an admin's account here."""

    @pytest.mark.parametrize("role", [Role.admin, Role.pm])
    async def test_a_token_with_a_staff_email_signs_nobody_in_and_links_nothing(self, client, session, caplog, role):
        staff = make_user(session, email="dana@bigco.example", role=role)
        caplog.set_level(logging.WARNING, logger="ahead.accounts")
        response = await sso(client, hs256(claims()), next_="/admin")
        assert response.status_code == 403
        assert "belongs to a staff account" in response.text and "Sign in with a password" in response.text
        assert '<form method="post" action="/login"' in response.text  # the sign-in page, password form included
        assert "ahead_session=" not in response.headers.get("set-cookie", "")
        assert count(session, UserSession) == 0 and count(session, Identity) == 0
        session.expire_all()
        assert (staff.role, staff.display_name, staff.organisation_id) == (role, staff.display_name, None)
        assert (await client.get("/admin")).status_code == 303  # still signed out
        assert any(r.name == "ahead.accounts" and r.levelno == logging.WARNING and "host-app SSO" in r.getMessage()
                   and "dana@bigco.example" in r.getMessage() for r in caplog.records)

    async def test_an_sso_identity_linked_to_a_staff_account_earlier_no_longer_signs_in(self, client, session):
        admin = make_user(session, email="dana@bigco.example", role=Role.admin)
        session.add(Identity(user_id=admin.id, kind=IdentityKind.sso, issuer="sso", subject="host-user-42"))
        session.flush()
        response = await sso(client, hs256(claims(email="someone-else@bigco.example")))
        assert response.status_code == 403 and count(session, UserSession) == 0

    async def test_a_customer_made_staff_later_stops_signing_in_through_the_host_app(self, client, session):
        assert (await sso(client, hs256(claims()))).status_code == 303
        dana = session.scalar(select(User).where(User.email == "dana@bigco.example"))
        dana.role = Role.pm
        session.flush()
        client.cookies.clear()
        assert (await sso(client, hs256(claims()))).status_code == 403


SWITCH = re.compile(r'name="switch" value="([^"]+)"')


class TestSwitchingAccounts:
    """Someone else signed in in this browser: the host app's link asks before it replaces their session."""

    @pytest.fixture
    def someone(self, client, session):
        someone = make_user(session, email="sam@example.com")
        sign_in(client, session, someone)
        return someone

    async def _ask(self, client, **overrides):
        page = await sso(client, hs256(claims(**overrides)), next_="/changelog")
        assert page.status_code == 200, page.text
        return page, SWITCH.search(page.text).group(1)

    async def test_a_get_only_asks_and_switches_nothing(self, client, session, someone):
        before = client.cookies["ahead_session"]
        page, _ = await self._ask(client)
        assert "You are signed in as <strong>sam@example.com</strong>. Continue as <strong>dana@bigco.example" \
            in page.text
        assert 'action="/sso/jwt/confirm"' in page.text and page.headers["cache-control"] == "no-store"
        assert "ahead_session=" not in page.headers.get("set-cookie", "")
        assert client.cookies["ahead_session"] == before
        assert session.scalar(select(User).where(User.email == "dana@bigco.example")) is None
        assert count(session, Identity) == 0
        assert "sam@example.com" in (await client.get("/me")).text
        assert (await client.get("/sso/jwt/confirm")).status_code == 405

    async def test_confirming_switches_to_the_other_person(self, client, session, someone):
        before = client.cookies["ahead_session"]
        _, switch = await self._ask(client)
        response = await post_form(client, "/sso/jwt/confirm", {"switch": switch})
        assert response.status_code == 303 and response.headers["location"] == "/changelog"
        rotated = response.cookies.get("ahead_session")
        assert rotated and rotated != before
        me = await client.get("/me")
        assert "dana@bigco.example" in me.text and "sam@example.com" not in me.text
        assert session.scalar(select(func.count()).select_from(UserSession)
                              .where(UserSession.user_id == someone.id)) == 0  # sam's session here ended

    async def test_a_confirmation_works_once(self, client, session, someone):
        before = client.cookies["ahead_session"]
        _, switch = await self._ask(client)
        assert (await post_form(client, "/sso/jwt/confirm", {"switch": switch})).status_code == 303
        client.cookies.delete("ahead_session")
        client.cookies.set("ahead_session", before)  # even from the very same browser state
        again = await post_form(client, "/sso/jwt/confirm", {"switch": switch})
        assert again.status_code == 400 and "already used" in again.text
        assert "ahead_session=" not in again.headers.get("set-cookie", "")

    async def test_another_browser_cannot_use_it(self, app, client, session, someone):
        _, switch = await self._ask(client)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
            sign_in(other, session, make_user(session, email="eve@example.com"))
            response = await post_form(other, "/sso/jwt/confirm", {"switch": switch})
            assert response.status_code == 400 and "another browser" in response.text
            assert "eve@example.com" in (await other.get("/me")).text
            other.cookies.delete("ahead_session")  # nor a signed-out one
            assert (await post_form(other, "/sso/jwt/confirm", {"switch": switch})).status_code == 400
        assert session.scalar(select(User).where(User.email == "dana@bigco.example")) is None
        # ... and the browser it was made for still can
        assert (await post_form(client, "/sso/jwt/confirm", {"switch": switch})).status_code == 303

    async def test_an_expired_confirmation_is_refused(self, client, session, someone, monkeypatch):
        from app.accounts import sso as sso_module

        _, switch = await self._ask(client)
        later = time.time() + sso_module.SWITCH_SECONDS + 1
        monkeypatch.setattr(sso_module, "_now", lambda: later)
        response = await post_form(client, "/sso/jwt/confirm", {"switch": switch})
        assert response.status_code == 400 and "expired" in response.text
        assert "sam@example.com" in (await client.get("/me")).text

    async def test_a_tampered_confirmation_is_refused(self, client, session, someone):
        _, switch = await self._ask(client)
        signature = switch.rsplit(".", 1)[1]
        forged = b64({"sub": "x", "email": "admin@example.com"}) + "." + signature
        for token in (forged, switch[:-2] + "AA", ""):
            response = await post_form(client, "/sso/jwt/confirm", {"switch": token})
            assert response.status_code == 400
        assert "sam@example.com" in (await client.get("/me")).text

    async def test_the_same_person_continues_without_a_question(self, client, session):
        assert (await sso(client, hs256(claims()))).status_code == 303
        again = await sso(client, hs256(claims()), next_="/changelog")
        assert again.status_code == 303 and again.headers["location"] == "/changelog"

    async def test_a_staff_member_signed_in_is_asked_too_and_a_staff_target_is_refused(self, client, session):
        admin = make_user(session, email="boss@example.com", role=Role.admin)
        sign_in(client, session, admin)
        page, _ = await self._ask(client)
        assert "You are signed in as <strong>boss@example.com</strong>" in page.text
        make_user(session, email="pat@bigco.example", role=Role.pm)
        refused = await sso(client, hs256(claims(sub="host-pat", email="pat@bigco.example")))
        assert refused.status_code == 403 and "belongs to a staff account" in refused.text


class TestRefusedTokens:
    async def _refused(self, client, session, token, *words):
        response = await sso(client, token, next_="/changelog")
        assert response.status_code == 400
        assert "We could not sign you in" in response.text
        assert "go back to the app you came from and try again" in response.text.lower()
        for word in words:
            assert word in response.text
        assert "Traceback" not in response.text
        assert "ahead_session" not in response.headers.get("set-cookie", "")
        assert count(session, User) == 0 and count(session, UserSession) == 0 and count(session, Organisation) == 0
        return response

    async def test_expired(self, client, session):
        now = int(time.time())
        await self._refused(client, session, hs256(claims(iat=now - 400, exp=now - 100)), "expired")

    async def test_replayed(self, client, session):
        token = hs256(claims())
        assert (await sso(client, token)).status_code == 303
        client.cookies.clear()
        users = count(session, User)
        response = await sso(client, token)
        assert response.status_code == 400 and "already used" in response.text
        assert count(session, UserSession) == 1 and count(session, User) == users

    async def test_signed_with_another_key(self, client, session):
        await self._refused(client, session, hs256(claims(), secret="another-secret-of-enough-length-" + "z" * 9),
                            "not signed by")

    async def test_alg_none(self, client, session):
        token = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims())}."
        await self._refused(client, session, token, "not signed the way this portal expects")

    async def test_rs256_token_when_only_a_secret_is_configured(self, client, session):
        token = jwt.encode({"alg": "RS256"}, claims(), RSA_KEY)
        await self._refused(client, session, token, "not signed the way this portal expects")

    async def test_missing_email(self, client, session):
        await self._refused(client, session, hs256(claims(email=None)), "did not tell us your email")

    async def test_exp_too_far_ahead(self, client, session):
        now = int(time.time())
        await self._refused(client, session, hs256(claims(exp=now + 3600)), "valid for too long")

    async def test_missing_jti(self, client, session):
        await self._refused(client, session, hs256(claims(jti=None)), "missing information")

    async def test_not_yet_valid(self, client, session):
        now = int(time.time())
        await self._refused(client, session, hs256(claims(nbf=now + 200, exp=now + 290)), "not valid yet")

    @pytest.mark.parametrize("token", ["", "not-a-jwt", "a.b.c", "eyJhbGciOiJIUzI1NiJ9.bm90IGpzb24.c2ln"])
    async def test_malformed(self, client, session, token):
        await self._refused(client, session, token)

    async def test_uses_the_product_name_from_branding(self, client, session):
        from app.portal import service as portal
        from app.portal.models import PortalSetting

        session.add(PortalSetting(key="branding", value={"portal_name": "Ahead", "product_name": "Rotawise"}))
        session.flush()
        portal.clear_cache()
        response = await sso(client, hs256(claims(exp=int(time.time()) - 60)))
        assert "Go back to Rotawise and try again" in response.text


class TestNotConfigured:
    @pytest.fixture
    def settings(self, database_url):
        return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32,
                        base_url="http://testserver", redis_url="", _env_file=None)  # type: ignore[call-arg]

    async def test_is_a_404(self, client, session):
        response = await client.get("/sso/jwt", params={"token": hs256(claims())})
        assert response.status_code == 404
        assert "Page not found" in response.text
        assert count(session, User) == 0
        assert (await client.head("/sso/jwt", params={"token": hs256(claims())})).status_code == 404  # as its GET


class TestPublicKeys:
    @pytest.fixture(params=["RS256", "ES256"])
    def key_pair(self, request):
        return request.param, (RSA_KEY if request.param == "RS256" else EC_KEY)

    @pytest.fixture
    def settings(self, database_url, key_pair):
        _, private = key_pair
        return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32,
                        base_url="http://testserver", redis_url="",
                        sso_jwt_public_key=private.as_pem(private=False).decode(),
                        _env_file=None)  # type: ignore[call-arg]

    async def test_valid_token_signs_in(self, client, session, key_pair):
        alg, private = key_pair
        response = await sso(client, jwt.encode({"alg": alg}, claims(), private), next_="/changelog")
        assert response.status_code == 303 and response.headers["location"] == "/changelog"
        assert count(session, UserSession) == 1

    async def test_signed_by_another_key_pair(self, client, session, key_pair):
        alg, _ = key_pair
        other = RSAKey.generate_key(2048) if alg == "RS256" else ECKey.generate_key("P-256")
        response = await sso(client, jwt.encode({"alg": alg}, claims(), other))
        assert response.status_code == 400 and "not signed by" in response.text
        assert count(session, User) == 0

    async def test_hmac_with_the_public_key_as_secret_is_refused(self, client, session, key_pair):
        # The classic algorithm confusion: "HS256" signed with the (public) PEM text as the secret.
        _, private = key_pair
        signing_input = f"{b64({'alg': 'HS256', 'typ': 'JWT'})}.{b64(claims())}"
        mac = hmac.new(private.as_pem(private=False), signing_input.encode(), hashlib.sha256).digest()
        token = signing_input + "." + base64.urlsafe_b64encode(mac).rstrip(b"=").decode()
        response = await sso(client, token)
        assert response.status_code == 400 and "not signed the way this portal expects" in response.text
        assert count(session, User) == 0

    async def test_the_other_asymmetric_algorithm_is_refused(self, client, session, key_pair):
        alg, _ = key_pair
        token = (jwt.encode({"alg": "ES256"}, claims(), EC_KEY) if alg == "RS256"
                 else jwt.encode({"alg": "RS256"}, claims(), RSA_KEY))
        response = await sso(client, token)
        assert response.status_code == 400
        assert count(session, User) == 0


@pytest.mark.parametrize("overrides, message", [
    ({"sso_jwt_secret": "too-short"}, "at least 32"),
    ({"sso_jwt_public_key": "not a pem"}, "PEM public key"),
    ({"sso_jwt_public_key": ECKey.generate_key("P-384").as_pem(private=False).decode()}, "P-256"),
])
def test_unusable_keys_stop_start_up(overrides, message):
    settings = Settings(secret_key="k" * 40, _env_file=None, **overrides)  # type: ignore[call-arg]
    with pytest.raises(SsoConfigError, match=message):
        load_keys(settings)


def test_pem_with_escaped_newlines_from_an_environment_variable():
    pem = RSA_KEY.as_pem(private=False).decode().strip().replace("\n", "\\n")
    keys = load_keys(Settings(secret_key="k" * 40, sso_jwt_public_key=pem, _env_file=None))  # type: ignore[call-arg]
    assert list(keys.by_algorithm) == ["RS256"]


class TestAccessLog:
    def _record(self, path):
        return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, '%s - "%s %s HTTP/%s" %d',
                                 ("127.0.0.1:5000", "GET", path, "1.1", 303), None)

    def test_tokens_in_query_strings_are_redacted(self):
        token = hs256(claims())
        record = self._record(f"/sso/jwt?token={token}&next=/items/x")
        assert RedactTokens().filter(record) is True
        line = record.getMessage()
        assert token not in line
        assert '"GET /sso/jwt?token=[redacted]&next=/items/x HTTP/1.1" 303' in line

    def test_magic_link_and_invitation_tokens_in_paths_are_redacted(self):
        for path, expected in [("/login/email/abcDEF123_-x", "/login/email/[redacted]"),
                               ("/invitations/abcDEF123_-x", "/invitations/[redacted]"),
                               ("/login/email/sent", "/login/email/sent"),
                               ("/items/abc?q=token", "/items/abc?q=token")]:
            record = self._record(path)
            RedactTokens().filter(record)
            assert f"GET {expected} HTTP" in record.getMessage()

    def test_create_app_installs_the_filter_on_uvicorns_access_logger(self, app):
        logger = logging.getLogger("uvicorn.access")
        assert sum(isinstance(f, RedactTokens) for f in logger.filters) == 1
        lines = []
        handler = logging.Handler()
        handler.emit = lambda record: lines.append(handler.format(record))  # type: ignore[method-assign]
        logger.addHandler(handler)
        level = logger.level
        logger.setLevel(logging.INFO)
        try:
            logger.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:1", "GET", "/sso/jwt?token=eyJsecret.x.y", "1.1", 303)
        finally:
            logger.removeHandler(handler)
            logger.setLevel(level)
        assert lines == ['127.0.0.1:1 - "GET /sso/jwt?token=[redacted] HTTP/1.1" 303']


def test_used_token_ids_are_forgotten_once_they_expire(session):
    from datetime import timedelta

    from app.accounts import service as accounts
    from app.accounts.models import UsedToken
    from app.db import utcnow

    assert accounts.use_token_id(session, key="sso:old", expires_at=utcnow() - timedelta(seconds=1))
    assert accounts.use_token_id(session, key="sso:new", expires_at=utcnow() + timedelta(minutes=5))
    assert not accounts.use_token_id(session, key="sso:new", expires_at=utcnow() + timedelta(minutes=5))
    assert list(session.scalars(select(UsedToken.jti))) == ["sso:new"]
