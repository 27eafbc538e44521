"""/admin/access: private-portal mode, the staff role mapping for single sign-on, the providers list."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.config import Settings
from app.deps import SESSION_COOKIE
from app.portal import service as portal
from app.roadmap.models import Visibility
from tests.factories import PASSWORD, make_admin, make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in
from tests.helpers.sso import NO_STAFF_RULES

PROVIDERS = [
    {"name": "okta", "label": "Sign in with Okta", "issuer": "https://acme.okta.example", "client_id": "abc",
     "client_secret": "never-shown-anywhere"},
]


@pytest.fixture
def settings(database_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=database_url, secret_key="test-secret-key-" + "x" * 32, base_url="http://roadmap.example",
        redis_url="", oidc_providers=json.dumps(PROVIDERS), _env_file=None,  # type: ignore[call-arg]
    )


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))




class TestPrivateMode:
    async def test_private_mode_sends_visitors_to_sign_in_and_leaves_sign_in_open(self, client, session, admin):
        item = make_item(session, title="Bulk shift import", visibility=Visibility.public)
        page = await client.get("/admin/access")
        assert "Only signed-in people can see the portal" in page.text
        assert "visitors who are not signed in are sent to the sign-in page" in page.text

        response = await post_form(client, "/admin/access", {**NO_STAFF_RULES, "private_mode": "1"}, page="/admin/access")
        assert response.status_code == 303
        saved = await client.get("/admin/access")
        assert "The portal is private" in saved.text
        assert re.search(r'id="f-private_mode" name="private_mode" value="1" checked', saved.text)

        client.cookies.delete(SESSION_COOKIE)  # now a visitor
        for path in ("/", "/changelog", item.path, f"/items/{item.public_id}", "/search?q=shift",
                     "/changelog.atom", "/sitemap.xml"):
            response = await client.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login?next="), path
            assert "Accept" in response.headers["vary"], path  # a JSON client gets a 401 there
            assert "Bulk shift import" not in response.text
        api = await client.get("/api/v1/items")
        assert api.status_code == 401
        assert api.json()["error"] == "not_authenticated"
        # what the setting's hint says stays open
        for path in ("/login", "/healthz", "/static/app.css", "/branding.css", "/openapi.json", "/robots.txt"):
            assert (await client.get(path)).status_code == 200, path
        assert (await client.get("/robots.txt")).text.splitlines()[-1] == "Disallow: /"

        make_user(session, email="cleo@customer.example", password=PASSWORD)
        response = await post_form(client, "/login", {"email": "cleo@customer.example", "password": PASSWORD,
                                                      "next": "/"}, page="/login")
        assert response.status_code == 303 and response.headers["location"] == "/"
        board = await client.get("/")
        assert board.status_code == 200 and "Bulk shift import" in board.text
        assert (await client.get("/api/v1/items")).status_code == 200

    async def test_the_hint_names_the_cdns_copies_only_when_a_cdn_may_keep_pages(self, app, client, admin,
                                                                                monkeypatch):
        hint = "A CDN may go on serving visitor pages it already holds"
        assert hint not in _text((await client.get("/admin/access")).text)
        monkeypatch.setattr(app.state, "settings", app.state.settings.model_copy(update={"public_cache_seconds": 60}))
        assert f"{hint} for up to 60 seconds" in _text((await client.get("/admin/access")).text)

    async def test_turning_it_off_opens_the_portal_again_and_both_changes_are_audited(
            self, client, session, admin):
        await post_form(client, "/admin/access", {**NO_STAFF_RULES, "private_mode": "1"}, page="/admin/access")
        await post_form(client, "/admin/access", NO_STAFF_RULES, page="/admin/access")
        client.cookies.delete(SESSION_COOKIE)
        assert (await client.get("/")).status_code == 200
        events = session.scalars(select(AuditEvent).where(AuditEvent.action == "settings.access")
                                 .order_by(AuditEvent.id)).all()
        assert [e.changes["private_mode"] for e in events] == [[False, True], [True, False]]


class TestRoleMapping:
    async def test_the_mapping_is_saved_normalised_and_shown_again(self, client, session, admin):
        response = await post_form(client, "/admin/access", {
            **NO_STAFF_RULES, "groups_claim": "roles",
            "admin_emails": "Dana@Rotawise.example\n dana@rotawise.example", "admin_groups": "roadmap-admins",
            "pm_domains": "product.rotawise.example, @PM.rotawise.example", "pm_groups": "Product Team\nPMs",
        }, page="/admin/access")
        assert response.status_code == 303
        access = portal.get_access(session)
        assert access.groups_claim == "roles"
        assert access.admin.emails == ("dana@rotawise.example",) and access.admin.groups == ("roadmap-admins",)
        assert access.pm.domains == ("product.rotawise.example", "pm.rotawise.example")
        assert access.pm.groups == ("Product Team", "PMs")
        assert access.staff_role_for(email="x@pm.rotawise.example", groups=[]) == "pm"
        assert access.staff_role_for(email="someone@else.example", groups=["roadmap-admins"]) == "admin"

        page = await client.get("/admin/access")
        assert 'value="roles"' in page.text
        assert ">dana@rotawise.example</textarea>" in page.text
        assert ">product.rotawise.example\npm.rotawise.example</textarea>" in page.text
        assert ">Product Team\nPMs</textarea>" in page.text
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.access"))
        assert event.changes["pm.groups"] == ["", "Product Team, PMs"]
        log = _text((await client.get("/admin/audit")).text)
        assert "PM groups" in log

    async def test_a_bad_value_is_explained_and_nothing_is_saved(self, client, session, admin):
        response = await post_form(client, "/admin/access", {
            **NO_STAFF_RULES, "private_mode": "1", "admin_emails": "dana@rotawise.example\nnot-an-address",
            "pm_domains": "ok.example, bad_domain",
        }, page="/admin/access")
        assert response.status_code == 422
        assert "“not-an-address” is not an email address." in response.text
        assert "Not an email domain: “bad_domain”." in response.text
        assert "dana@rotawise.example\nnot-an-address</textarea>" in response.text  # what was typed stays
        assert portal.get_access(session) == portal.Access()
        assert session.scalar(select(AuditEvent).where(AuditEvent.action == "settings.access")) is None

    async def test_the_providers_from_the_environment_are_listed_with_their_callback(self, client, admin):
        page = await client.get("/admin/access")
        text = _text(page.text)
        assert "okta Sign in with Okta https://acme.okta.example http://roadmap.example/auth/okta/callback" in text
        assert "never-shown-anywhere" not in page.text


class TestWhoMayOpenIt:
    async def test_a_pm_gets_not_found_and_cannot_post(self, client, session):
        sign_in(client, session, make_pm(session))
        assert (await client.get("/admin/access")).status_code == 404
        response = await post_form(client, "/admin/access", {**NO_STAFF_RULES, "private_mode": "1"}, page="/admin")
        assert response.status_code == 404
        assert portal.get_access(session).private_mode is False
        assert 'href="/admin/access"' not in (await client.get("/admin")).text

    async def test_the_admin_nav_links_the_new_pages(self, client, admin):
        nav = (await client.get("/admin")).text
        for href in ("/admin/organisations", "/admin/segments", "/admin/people", "/admin/access"):
            assert f'href="{href}"' in nav
