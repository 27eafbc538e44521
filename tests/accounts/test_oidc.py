"""Single sign-on through OpenID Connect, against a real provider (oidc-provider on loopback).

Every flow is the real one: the app's /auth/test/start sends us to the provider, a person logs in
and consents on the provider's own forms (plain httpx, hop by hop), and the provider's redirect back
to http://testserver/auth/test/callback goes through the ASGI client. Failures are provoked at the
provider itself: cancelling, reusing a code, a stopped process, and forged ID tokens it serves once
(tests/node/oidc-provider.mjs, "Test hook").
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from sqlalchemy import func, select

from app.accounts.models import Identity, IdentityKind, Role, User, UserSession
from app.config import Settings
from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.portal import service as portal
from app.roadmap.models import Visibility
from tests.factories import make_admin, make_item, make_user
from tests.helpers.oidc_provider import ProviderBrowser, RunningProvider, providers_env, run_provider

CALLBACK = "http://testserver/auth/test/callback"


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with run_provider(tmp_path_factory.mktemp("oidc"), redirect_uris=[CALLBACK,
                      "http://testserver/auth/down/callback"]) as running:
        yield running


@pytest.fixture
def settings(database_url: str, provider: RunningProvider) -> Settings:
    return Settings(
        database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://testserver",
        redis_url="", oidc_providers=providers_env(provider.config("test", "Acme SSO")),
        _env_file=None,  # type: ignore[call-arg]
    )


# --- helpers -----------------------------------------------------------------------------------------


async def start(client: httpx.AsyncClient, provider: RunningProvider, next_: str | None = None,
                name: str = "test") -> str:
    """GET /auth/{name}/start; returns the provider's authorization URL it redirects to."""
    response = await client.get(f"/auth/{name}/start" + (f"?{urlencode({'next': next_})}" if next_ else ""))
    assert response.status_code == 302, response.text
    location = response.headers["location"]
    assert location.startswith(f"{provider.issuer}/auth?"), location
    return location


def at_provider(provider: RunningProvider, authorize_url: str, login: str) -> str:
    """A person logs in and consents on the provider's forms; returns the callback URL it sends them to."""
    with ProviderBrowser(provider) as browser:
        callback = browser.sign_in(authorize_url, login)
    assert callback.startswith("http://testserver/auth/"), callback
    return callback


async def back_at_app(client: httpx.AsyncClient, callback_url: str) -> httpx.Response:
    """The provider's redirect back, delivered to the app (the ASGI client and the provider are different hosts)."""
    return await client.get(callback_url)


async def sign_in_through_provider(client: httpx.AsyncClient, provider: RunningProvider, login: str,
                                   next_: str | None = None) -> httpx.Response:
    return await back_at_app(client, at_provider(provider, await start(client, provider, next_), login))


def with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query.update(changes)
    return urlunsplit(parts._replace(query=urlencode(query)))


def count(session, model, *where) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model).where(*where)) or 0


def user_by_email(session, email: str) -> User | None:  # type: ignore[no-untyped-def]
    session.expire_all()
    return session.scalar(select(User).where(User.email == email))


def assert_nobody_signed_in(response: httpx.Response, session, email: str = "alice@acme.example") -> None:  # type: ignore[no-untyped-def]
    """A failed sign-in leaves no trace: no account, no identity, no session, no session cookie."""
    assert "ahead_session=" not in response.headers.get("set-cookie", "")
    assert "Traceback" not in response.text
    assert user_by_email(session, email) is None
    assert count(session, Identity) == 0
    assert count(session, UserSession) == 0


def make_segment(session, name: str) -> Segment:  # type: ignore[no-untyped-def]
    segment = Segment(slug=name.lower(), name=name)
    session.add(segment)
    session.flush()
    return segment


def make_organisation(session, name: str, domain: str, segment: Segment) -> Organisation:  # type: ignore[no-untyped-def]
    organisation = Organisation(name=name, segment_id=segment.id)
    session.add(organisation)
    session.flush()
    session.add(OrganisationDomain(organisation_id=organisation.id, domain=domain))
    session.flush()
    return organisation


@pytest.fixture
def roadmap(session):  # type: ignore[no-untyped-def]
    """Acme (acme.example, Enterprise) and Globex (globex.example, Starter); one item for every customer,
    one for Enterprise customers only."""
    enterprise, starter = make_segment(session, "Enterprise"), make_segment(session, "Starter")
    make_organisation(session, "Acme", "acme.example", enterprise)
    make_organisation(session, "Globex", "globex.example", starter)
    return {
        "customers": make_item(session, title="Customer webhooks preview", visibility=Visibility.customers),
        "enterprise": make_item(session, title="Enterprise audit export", visibility=Visibility.customers,
                                segments=[enterprise]),
    }


# --- the sign-in page --------------------------------------------------------------------------------


async def test_login_page_has_one_button_per_provider_that_keeps_next(client):
    page = await client.get("/login?next=/items/abc123")
    assert page.status_code == 200
    assert ">Acme SSO</a>" in page.text
    assert 'href="/auth/test/start?next=/items/abc123"' in page.text


async def test_unknown_provider_is_not_found(client):
    assert (await client.get("/auth/nope/start")).status_code == 404
    assert (await client.get("/auth/nope/callback?code=x&state=y")).status_code == 404
    assert (await client.head("/auth/nope/start")).status_code == 404  # as its GET, not "method not allowed"
    assert (await client.head("/auth/nope/callback?code=x&state=y")).status_code == 404


async def test_a_head_of_a_sign_in_step_is_refused_and_changes_nothing(client, session, provider):
    """Link checkers and previews send HEAD; the steps' GETs act, so a HEAD is refused and starts nothing."""
    for path in ("/auth/test/start?next=/", "/auth/test/callback?code=x&state=y"):
        head = await client.head(path)
        assert head.status_code == 405 and head.headers["allow"] == "GET", path
        assert "set-cookie" not in head.headers, path
    assert count(session, UserSession) == 0
    assert (await client.get("/auth/test/start")).status_code == 302  # its GET still sends the browser on


# --- signing in --------------------------------------------------------------------------------------


async def test_customer_signs_in_and_sees_the_customer_only_items_of_their_segment(client, session, provider,
                                                                                 roadmap):
    customers, enterprise = roadmap["customers"], roadmap["enterprise"]
    before = await client.get("/")
    assert customers.title not in before.text
    assert (await client.get(f"/items/{customers.public_id}", follow_redirects=True)).status_code == 404
    assert (await client.get(f"/items/{enterprise.public_id}", follow_redirects=True)).status_code == 404

    start_response = await client.get(f"/auth/test/start?next=/items/{enterprise.public_id}")
    cookie = start_response.headers["set-cookie"]
    assert "ahead_oidc=" in cookie and "path=/auth" in cookie and "httponly" in cookie.lower()
    authorize_url = start_response.headers["location"]
    query = parse_qs(urlsplit(authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and query["code_challenge"]
    assert query["nonce"] and query["state"]
    assert query["redirect_uri"] == [CALLBACK]
    assert set(query["scope"][0].split()) == {"openid", "email", "profile", "groups"}

    response = await back_at_app(client, at_provider(provider, authorize_url, "alice"))
    assert response.status_code == 303
    assert response.headers["location"] == f"/items/{enterprise.public_id}"
    assert "ahead_session=" in response.headers["set-cookie"]

    page = await client.get(f"/items/{enterprise.public_id}", follow_redirects=True)
    assert page.status_code == 200 and enterprise.title in page.text
    assert "You are signed in as alice@acme.example." in page.text
    assert customers.title in (await client.get("/")).text

    alice = user_by_email(session, "alice@acme.example")
    assert alice is not None and alice.role is Role.customer and alice.display_name == "Alice Acme"
    assert session.get(Organisation, alice.organisation_id).name == "Acme"
    identity = session.scalar(select(Identity).where(Identity.user_id == alice.id))
    assert (identity.kind, identity.issuer, identity.subject) == (IdentityKind.oidc, provider.issuer, "alice")


async def test_customer_of_another_segment_still_gets_not_found(client, session, provider, roadmap):
    response = await sign_in_through_provider(client, provider, "bob")
    assert response.status_code == 303 and response.headers["location"] == "/"
    bob = user_by_email(session, "bob@globex.example")
    assert session.get(Organisation, bob.organisation_id).name == "Globex"
    assert (await client.get(f"/items/{roadmap['customers'].public_id}", follow_redirects=True)).status_code == 200
    hidden = await client.get(f"/items/{roadmap['enterprise'].public_id}", follow_redirects=True)
    assert hidden.status_code == 404
    assert roadmap["enterprise"].title not in hidden.text
    assert roadmap["enterprise"].title not in (await client.get("/")).text


async def test_signing_in_again_finds_the_same_account(client, session, provider):
    await sign_in_through_provider(client, provider, "alice")
    first = client.cookies.get("ahead_session")
    await sign_in_through_provider(client, provider, "alice")
    assert client.cookies.get("ahead_session") != first  # a new session id at every sign-in
    assert count(session, User, User.email == "alice@acme.example") == 1
    assert count(session, Identity) == 1
    assert count(session, UserSession) == 1


async def test_next_cannot_leave_the_site(client, provider):
    response = await sign_in_through_provider(client, provider, "alice", next_="https://evil.example/phish")
    assert response.status_code == 303 and response.headers["location"] == "/"


async def test_staff_group_makes_the_person_an_admin(client, session, provider):
    admin = make_admin(session)
    portal.update_access(session, actor=admin, access=portal.Access(
        groups_claim="groups", admin=portal.StaffRule(groups=("roadmap-admins",))))
    response = await sign_in_through_provider(client, provider, "staffer")
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    staffer = user_by_email(session, "staffer@acme.example")
    assert staffer.role is Role.admin
    assert (await client.get("/admin")).status_code == 200


async def test_staff_email_domain_makes_the_person_a_pm(client, session, provider):
    admin = make_admin(session)
    portal.update_access(session, actor=admin, access=portal.Access(pm=portal.StaffRule(domains=("acme.example",))))
    await sign_in_through_provider(client, provider, "alice")
    assert user_by_email(session, "alice@acme.example").role is Role.pm


# --- failures: a clear page, nothing created ------------------------------------------------------------


async def test_a_replayed_callback_is_refused(app, client, session, provider):
    start_response = await client.get("/auth/test/start")
    oidc_cookie = start_response.cookies["ahead_oidc"]
    callback_url = at_provider(provider, start_response.headers["location"], "alice")
    assert (await back_at_app(client, callback_url)).status_code == 303
    sessions = count(session, UserSession)

    # The same browser again: its state was used up.
    again = await back_at_app(client, callback_url)
    assert again.status_code == 400
    assert "This sign-in has expired" in again.text and "start again" in again.text
    assert "ahead_session=" not in again.headers.get("set-cookie", "")

    # Someone who kept the old state cookie: the provider refuses the used code.
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as replayer:
        replayer.cookies.set("ahead_oidc", oidc_cookie, path="/auth")
        stolen = await back_at_app(replayer, callback_url)
    assert stolen.status_code == 400
    assert "Acme SSO refused this sign-in" in stolen.text
    assert "ahead_session=" not in stolen.headers.get("set-cookie", "")
    assert count(session, UserSession) == sessions


async def test_a_tampered_state_is_refused(client, session, provider):
    callback_url = at_provider(provider, await start(client, provider), "alice")
    response = await back_at_app(client, with_query(callback_url, state="forged-state"))
    assert response.status_code == 400
    assert "This sign-in has expired" in response.text
    assert 'href="/auth/test/start"' in response.text  # "Try Acme SSO again"
    assert_nobody_signed_in(response, session)


async def test_a_callback_this_browser_did_not_start_is_refused(app, client, session, provider):
    """Login CSRF: an attacker's own code and state, delivered to a victim's browser."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as attacker:
        attackers_callback = at_provider(provider, await start(attacker, provider), "mallory")
    response = await back_at_app(client, attackers_callback)
    assert response.status_code == 400 and "This sign-in has expired" in response.text
    assert_nobody_signed_in(response, session, "carol@acme.example")


async def test_an_answer_from_another_issuer_is_refused(client, session, provider):
    callback_url = at_provider(provider, await start(client, provider), "alice")
    response = await back_at_app(client, with_query(callback_url, iss="http://127.0.0.1:1"))
    assert response.status_code == 400 and "We could not verify this sign-in" in response.text
    assert_nobody_signed_in(response, session)


async def test_cancelling_at_the_provider(client, session, provider):
    with ProviderBrowser(provider) as browser:
        callback_url = browser.cancel(await start(client, provider, "/items/x"))
    assert "error=access_denied" in callback_url
    response = await back_at_app(client, callback_url)
    assert response.status_code == 400
    assert "Sign-in cancelled" in response.text and "sign in another way" in response.text
    assert 'href="/login?next=/items/x"' in response.text
    assert_nobody_signed_in(response, session)


async def test_unverified_email_is_not_linked_to_the_existing_account(client, session, provider):
    carol = make_user(session, email="carol@acme.example", password=None)
    response = await sign_in_through_provider(client, provider, "mallory")
    assert response.status_code == 400
    assert "did not confirm that the address is yours" in response.text
    assert "ahead_session=" not in response.headers.get("set-cookie", "")
    assert count(session, Identity) == 0
    assert count(session, UserSession, UserSession.user_id == carol.id) == 0


NOW = int(time.time())


FORGERIES = [
    pytest.param({"claims": {"aud": "another-client"}}, id="audience-another-client"),
    # Authlib alone accepts this one (it checks azp, not aud): our explicit aud rule refuses it.
    pytest.param({"claims": {"aud": ["another-client"], "azp": "ahead-test"}}, id="audience-another-client-we-azp"),
    pytest.param({"claims": {"iss": "http://issuer.invalid"}}, id="issuer-another"),
    pytest.param({"claims": {"exp": NOW - 600, "iat": NOW - 1200}}, id="expired"),
    pytest.param({"claims": {"iat": NOW + 3600, "exp": NOW + 7200}}, id="issued-in-the-future"),
    pytest.param({"claims": {"nonce": "not-the-nonce"}}, id="nonce-another"),
    pytest.param({"claims": {"nonce": None}}, id="nonce-missing"),
    pytest.param({"claims": {"sub": None}}, id="subject-missing"),
    pytest.param({"sign": "other-key"}, id="signed-by-another-key-same-kid"),
    pytest.param({"sign": "none"}, id="alg-none"),
    # Without an ID token Authlib checks nothing at all (not even the nonce): we refuse the response.
    pytest.param({"drop": True}, id="no-id-token"),
]


@pytest.mark.parametrize("forgery", FORGERIES)
async def test_a_forged_id_token_is_refused(client, session, provider, forgery):
    callback_url = at_provider(provider, await start(client, provider), "alice")
    provider.tamper(**forgery)
    response = await back_at_app(client, callback_url)
    assert response.status_code == 400
    assert "We could not verify this sign-in" in response.text
    assert_nobody_signed_in(response, session)


async def test_a_token_re_signed_by_the_provider_is_accepted(client, session, provider):
    """The control for the forgeries above: the hook itself produces tokens that verify."""
    callback_url = at_provider(provider, await start(client, provider), "alice")
    provider.tamper(claims={"name": "Alice Re-signed"})
    response = await back_at_app(client, callback_url)
    assert response.status_code == 303
    assert user_by_email(session, "alice@acme.example").display_name == "Alice Re-signed"


# --- a provider that is down or misconfigured ---------------------------------------------------------


def _use(app, *entries) -> None:  # type: ignore[no-untyped-def]
    app.state.settings = app.state.settings.model_copy(update={"oidc_providers": providers_env(*entries)})


async def test_provider_down_before_and_during_sign_in(app, client, session, tmp_path):
    with run_provider(tmp_path, redirect_uris=["http://testserver/auth/down/callback"]) as doomed:
        _use(app, doomed.config("down", "Doomed SSO"))
        authorize_url = await start(client, doomed, name="down")
        with ProviderBrowser(doomed) as browser:
            callback_url = browser.sign_in(authorize_url, "alice")
        doomed.stop()

        # Down between login and callback: the code cannot be exchanged.
        response = await back_at_app(client, callback_url)
        assert response.status_code == 502
        assert "Doomed SSO is not answering" in response.text and "Try again in a few minutes" in response.text
        assert_nobody_signed_in(response, session)

        # Down before the sign-in starts: discovery does not answer (a fresh app, nothing cached).
        del app.state.oidc
        response = await client.get("/auth/down/start?next=/items/x")
        assert response.status_code == 502
        assert "Doomed SSO is not answering" in response.text
        assert 'href="/login?next=/items/x"' in response.text
        assert "location" not in response.headers
        assert_nobody_signed_in(response, session)


async def test_discovery_naming_another_issuer_is_refused(app, client, session, tmp_path):
    with run_provider(tmp_path, redirect_uris=[CALLBACK], issuer="http://issuer.invalid") as liar:
        entry = liar.config("test", "Liar SSO", issuer=f"http://127.0.0.1:{liar.port}")
        _use(app, entry)
        response = await client.get("/auth/test/start")
    assert response.status_code == 502
    assert "Liar SSO is not set up correctly" in response.text
    assert "Please tell the portal&#39;s administrator" in response.text
    assert_nobody_signed_in(response, session)


async def test_an_unverified_email_earns_neither_an_account_nor_a_staff_role(client, session, provider):
    admin = make_admin(session)
    portal.update_access(session, actor=admin, access=portal.Access(pm=portal.StaffRule(domains=("acme.example",))))
    response = await sign_in_through_provider(client, provider, "mallory")  # carol@acme.example, unverified
    assert response.status_code == 400
    assert "did not confirm your email address" in response.text
    assert user_by_email(session, "carol@acme.example") is None
    assert_nobody_signed_in(response, session)
    assert (await client.get("/admin")).status_code in (303, 404)


# --- staff accounts: only a provider mapped to staff opens them ----------------------------------------------


@pytest.mark.parametrize("role", [Role.admin, Role.pm])
async def test_an_unmapped_provider_with_a_staff_members_verified_email_is_refused(client, session, provider, caplog,
                                                                                   role):
    import logging

    staff = make_user(session, email="alice@acme.example", role=role)  # with a password, as staff have
    caplog.set_level(logging.WARNING, logger="ahead.accounts")
    response = await sign_in_through_provider(client, provider, "alice")  # verified alice@acme.example
    assert response.status_code == 403
    assert "belongs to a staff account" in response.text and "cannot be entered with Acme SSO" in response.text
    assert "set up for staff" not in response.text  # no provider is mapped to staff: not offered
    assert "ahead_session=" not in response.headers.get("set-cookie", "")
    assert count(session, Identity) == 0 and count(session, UserSession) == 0
    assert user_by_email(session, "alice@acme.example").role is role
    assert staff.password_hash
    assert (await client.get("/admin")).status_code == 303
    assert any(r.name == "ahead.accounts" and "OIDC test" in r.getMessage() and "alice@acme.example" in r.getMessage()
               for r in caplog.records)


async def test_a_provider_mapped_to_staff_still_signs_a_staff_member_in(client, session, provider):
    admin = make_admin(session, email="staffer@acme.example")
    portal.update_access(session, actor=admin, access=portal.Access(
        groups_claim="groups", admin=portal.StaffRule(groups=("roadmap-admins",))))
    response = await sign_in_through_provider(client, provider, "staffer")
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    assert (await client.get("/admin")).status_code == 200
    assert count(session, Identity, Identity.user_id == admin.id) == 1
    assert user_by_email(session, "staffer@acme.example").role is Role.admin


async def test_when_a_mapping_exists_the_refusal_names_that_way_too(client, session, provider):
    admin = make_admin(session)
    make_user(session, email="alice@acme.example", role=Role.pm)
    portal.update_access(session, actor=admin, access=portal.Access(
        groups_claim="groups", admin=portal.StaffRule(groups=("roadmap-admins",))))  # alice is not in it
    response = await sign_in_through_provider(client, provider, "alice")
    assert response.status_code == 403
    assert "or with the sign-in service your admin set up for staff" in response.text
