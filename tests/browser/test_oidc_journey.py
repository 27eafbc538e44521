"""Customers sign in through their company's OpenID provider, in Chromium, on the provider's own forms.

The module runs its own live server (it must know the provider, and the provider its callback URL,
before either starts) and a real oidc-provider on loopback.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.roadmap.models import Visibility
from tests.factories import make_item
from tests.helpers.browser import Portal, axe_check, screenshot
from tests.helpers.oidc_provider import RunningProvider, providers_env, run_provider
from tests.helpers.servers import LiveServer, free_port, start_live_server

pytestmark = pytest.mark.browser

CUSTOMERS_TITLE = "Customer webhooks preview"
ENTERPRISE_TITLE = "Enterprise audit export"


@pytest.fixture(scope="module")
def app_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def oidc(tmp_path_factory: pytest.TempPathFactory, app_port: int) -> Iterator[RunningProvider]:
    with run_provider(tmp_path_factory.mktemp("oidc"),
                      redirect_uris=[f"http://127.0.0.1:{app_port}/auth/acme/callback"]) as provider:
        yield provider


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory, oidc: RunningProvider,
                app_port: int) -> Iterator[LiveServer]:
    """Overrides the shared server: this one has OIDC_PROVIDERS pointing at the provider above."""
    env = {"OIDC_PROVIDERS": providers_env(oidc.config("acme", "Acme SSO"))}
    with start_live_server(tmp_path_factory.mktemp("live-oidc"), port=app_port, extra_env=env) as server:
        yield server


def _roadmap(portal: Portal) -> dict[str, str]:
    """Acme (acme.example) is an Enterprise customer, Globex (globex.example) a Starter one."""
    with portal.transaction() as session:
        segments = {}
        for name in ("Enterprise", "Starter"):
            segments[name] = Segment(slug=name.lower(), name=name)
            session.add(segments[name])
        session.flush()
        for name, domain, segment in (("Acme", "acme.example", "Enterprise"), ("Globex", "globex.example", "Starter")):
            organisation = Organisation(name=name, segment_id=segments[segment].id)
            session.add(organisation)
            session.flush()
            session.add(OrganisationDomain(organisation_id=organisation.id, domain=domain))
        customers = make_item(session, title=CUSTOMERS_TITLE, visibility=Visibility.customers)
        enterprise = make_item(session, title=ENTERPRISE_TITLE, visibility=Visibility.customers,
                               segments=[segments["Enterprise"]])
        return {"customers": f"/items/{customers.public_id}", "enterprise": f"/items/{enterprise.public_id}"}


def _sign_in_at_provider(page: Any, login: str) -> None:
    """On the provider's own pages: its login form (any password), then its consent form."""
    from playwright.sync_api import expect

    page.wait_for_url(re.compile(r"/interaction/"))
    page.locator('input[name="login"]').fill(login)
    page.locator('input[name="password"]').fill("correct horse")
    page.get_by_role("button", name="Sign-in").click()
    continue_button = page.get_by_role("button", name="Continue")
    expect(continue_button).to_be_visible()
    continue_button.click()


def test_customer_signs_in_through_the_provider_and_sees_their_segment_only(portal: Portal, oidc: RunningProvider,
                                                                           open_context) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    paths = _roadmap(portal)

    # --- Alice (Acme, Enterprise) follows a link she was sent, before signing in ----------------------
    alice = open_context().new_page()
    alice.goto("/")
    expect(alice.get_by_role("heading", level=1)).to_be_visible()
    expect(alice.get_by_text(CUSTOMERS_TITLE)).to_have_count(0)
    response = alice.goto(paths["enterprise"])
    assert response is not None and response.status == 404
    expect(alice.get_by_text(ENTERPRISE_TITLE)).to_have_count(0)

    # The not-found page offers to sign in and come back; the sign-in page offers the company's provider.
    alice.get_by_role("main").get_by_role("link", name="sign in", exact=True).click()
    expect(alice.get_by_role("heading", name="Sign in", exact=True)).to_be_visible()
    axe_check(alice, "/login with a single sign-on provider")
    screenshot(alice, "oidc-login")
    alice.get_by_role("link", name="Acme SSO").click()
    assert alice.url.startswith(oidc.issuer)
    _sign_in_at_provider(alice, "alice")

    # Back on the link she followed, signed in, and the item is there.
    alice.wait_for_url(re.compile(re.escape(paths["enterprise"])))
    expect(alice.get_by_role("heading", level=1, name=ENTERPRISE_TITLE)).to_be_visible()
    expect(alice.get_by_text("You are signed in as alice@acme.example.")).to_be_visible()
    expect(alice.get_by_role("button", name="Sign out")).to_be_visible()
    alice.goto("/")
    expect(alice.get_by_text(CUSTOMERS_TITLE).first).to_be_visible()

    # --- Bob (Globex, Starter) signs in the same way ---------------------------------------------------
    bob = open_context().new_page()
    bob.goto("/login")
    bob.get_by_role("link", name="Acme SSO").click()
    _sign_in_at_provider(bob, "bob")
    bob.wait_for_url(f"{portal.url}/")
    expect(bob.get_by_role("button", name="Sign out")).to_be_visible()
    expect(bob.get_by_text(CUSTOMERS_TITLE).first).to_be_visible()
    # ... but the Enterprise item stays absent for him.
    expect(bob.get_by_text(ENTERPRISE_TITLE)).to_have_count(0)
    response = bob.goto(paths["enterprise"])
    assert response is not None and response.status == 404
    expect(bob.get_by_text(ENTERPRISE_TITLE)).to_have_count(0)

    assert portal.server_errors() == ""


def test_cancelling_at_the_provider_shows_what_to_do(portal: Portal, open_context) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import expect

    page = open_context().new_page()
    page.goto("/login?next=/changelog")
    page.get_by_role("link", name="Acme SSO").click()
    page.wait_for_url(re.compile(r"/interaction/"))
    page.get_by_role("link", name="[ Cancel ]").click()

    page.wait_for_url(re.compile(r"/auth/acme/callback"))
    expect(page.get_by_role("heading", name="Sign-in cancelled")).to_be_visible()
    expect(page.get_by_role("button", name="Sign out")).to_have_count(0)
    axe_check(page, "the OIDC error page")
    screenshot(page, "oidc-cancelled")
    page.get_by_role("link", name="Other ways to sign in").click()
    page.wait_for_url(re.compile(r"/login\?next=/changelog$"))
    assert portal.server_errors() == ""
