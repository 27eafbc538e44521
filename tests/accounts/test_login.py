"""Staff sign-in: sessions kept server-side, one answer for any failure, rate limits, safe redirects."""

import html
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from sqlalchemy import func, select

from app.accounts.models import UserSession
from app.accounts.views import LOGIN_FAILED, safe_next
from tests.factories import PASSWORD, make_admin, make_pm, make_user
from tests.helpers.http import csrf_token, post_form, sign_in


async def _login(client, email, password, next_=""):
    token = await csrf_token(client, "/")
    return await client.post("/login", data={"email": email, "password": password, "next": next_,
                                              "csrf_token": token})


async def test_pm_signs_in_and_reaches_the_staff_area(client, session):
    pm = make_pm(session, display_name="Paula PM")
    response = await _login(client, pm.email, PASSWORD)
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    cookie = response.headers["set-cookie"]
    assert "ahead_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    page = await client.get("/admin")
    assert page.status_code == 200
    assert "Paula PM" in page.text


async def test_wrong_email_and_wrong_password_get_the_same_answer(client, session):
    pm = make_pm(session)
    wrong_password = await _login(client, pm.email, "not the password")
    wrong_email = await _login(client, "nobody@example.com", PASSWORD)
    assert wrong_password.status_code == wrong_email.status_code == 400
    assert LOGIN_FAILED in wrong_password.text and LOGIN_FAILED in wrong_email.text
    assert f'value="{pm.email}"' in wrong_password.text  # the typed email is kept


async def test_each_sign_in_gets_a_new_session_id(client, session):
    pm = make_pm(session)
    first = (await _login(client, pm.email, PASSWORD)).cookies.get("ahead_session")
    second = (await _login(client, pm.email, PASSWORD)).cookies.get("ahead_session")
    assert first and second and first != second
    # the first session was replaced, not left behind
    assert session.scalar(select(func.count()).select_from(UserSession).where(UserSession.user_id == pm.id)) == 1


async def test_sign_out_ends_the_session_on_the_server(client, session):
    pm = make_pm(session)
    response = await _login(client, pm.email, PASSWORD)
    stolen = response.cookies.get("ahead_session")
    signed_out = await post_form(client, "/logout", page="/admin")
    assert session.scalar(select(func.count()).select_from(UserSession)) == 0
    # The browser is told to forget the pages it kept of this person: Back after signing out on a shared
    # computer otherwise showed a customer's item page and name from Chromium's cache (seen in a walk-through).
    assert signed_out.headers["clear-site-data"] == '"cache"'
    client.cookies.clear()
    client.cookies.set("ahead_session", stolen)
    again = await client.get("/admin")
    assert again.status_code == 303 and again.headers["location"].startswith("/login")


async def test_login_attempts_are_rate_limited(app, client, session):
    _limits(app, login_rate_limit="10/day")
    pm = make_pm(session)
    statuses = [(await _login(client, pm.email, "wrong password!")).status_code for _ in range(11)]
    assert statuses[:10] == [400] * 10
    assert statuses[10] == 429
    # even the right password is refused until the window passes
    blocked = await _login(client, pm.email, PASSWORD)
    assert blocked.status_code == 429
    assert "Too many requests" in blocked.text
    assert blocked.headers["retry-after"]


def _limits(app, **limits):  # type: ignore[no-untyped-def]
    """Per-day limits in these tests: a window boundary cannot fall in the middle of one."""
    app.state.settings = app.state.settings.model_copy(update=limits)


def browser_at(app, ip: str) -> httpx.AsyncClient:  # type: ignore[no-untyped-def]
    """A browser on another network (its own client address); `client` has started the app's lifespan."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(ip, 50123)), base_url="http://testserver")


class TestLockout:
    async def test_guessing_from_one_network_does_not_lock_the_staff_member_out_of_another(self, app, client,
                                                                                          session):
        _limits(app, login_rate_limit="3/day", login_ip_rate_limit="100/day")
        pm = make_pm(session)
        async with browser_at(app, "203.0.113.7") as attacker, browser_at(app, "198.51.100.20") as office:
            guesses = [(await _login(attacker, pm.email, f"guess number {n}")).status_code for n in range(4)]
            assert guesses == [400, 400, 400, 429]
            assert (await _login(attacker, pm.email, PASSWORD)).status_code == 429  # from there, even the right one
            signed_in = await _login(office, pm.email, PASSWORD)
            assert signed_in.status_code == 303 and signed_in.headers["location"] == "/admin"

    async def test_one_network_trying_many_addresses_is_stopped(self, app, client, session):
        _limits(app, login_rate_limit="100/day", login_ip_rate_limit="4/day")
        pm = make_pm(session)
        async with browser_at(app, "203.0.113.7") as attacker, browser_at(app, "198.51.100.20") as office:
            tries = [(await _login(attacker, f"someone{n}@example.com", "password guess")).status_code
                     for n in range(5)]
            assert tries == [400, 400, 400, 400, 429]
            assert (await _login(office, pm.email, PASSWORD)).status_code == 303

    async def test_password_change_attempts_are_limited(self, app, client, session):
        _limits(app, password_change_rate_limit="3/day")
        pm = make_pm(session)
        await _login(client, pm.email, PASSWORD)
        wrong = [(await _change_password(client, f"guess number {n}", "a much better passphrase")).status_code
                 for n in range(3)]
        assert wrong == [422, 422, 422]
        blocked = await _change_password(client, PASSWORD, "a much better passphrase")
        assert blocked.status_code == 429 and blocked.headers["retry-after"]
        client.cookies.clear()
        assert (await _login(client, pm.email, PASSWORD)).status_code == 303  # unchanged


async def test_next_brings_you_back_to_a_same_site_path(client, session):
    pm = make_pm(session)
    response = await _login(client, pm.email, PASSWORD, next_="/admin/items?status=draft")
    assert response.headers["location"] == "/admin/items?status=draft"


async def test_a_next_too_long_for_any_address_is_dropped_and_the_sign_in_goes_through(client, session):
    pm = make_pm(session)
    response = await _login(client, pm.email, PASSWORD, next_="/admin/" + "a" * 2000)
    assert response.status_code == 303 and response.headers["location"] == "/admin"
    wrong = await _login(client, pm.email, "not the password", next_="/admin/" + "a" * 2000)
    assert wrong.status_code == 400 and LOGIN_FAILED in wrong.text and "a" * 2000 not in wrong.text


async def test_the_header_sign_in_link_comes_back_to_the_same_view(client, session):
    customer = make_user(session, email="cat@customer.example")
    # rendered, then from the page cache; asked in another order, the board's own address (app/roadmap/views.py)
    for asked in ("/?sort=top&view=horizon", "/?sort=top&view=horizon", "/?view=horizon&sort=top"):
        board = await client.get(asked)
        link = re.search(r'<a href="(/login\?next=[^"]*)">Sign in</a>', board.text)
        assert link is not None
        target = parse_qs(urlsplit(html.unescape(link.group(1))).query)["next"]
        assert target == ["/?sort=top&view=horizon"]
    response = await _login(client, customer.email, PASSWORD, next_=target[0])
    assert response.headers["location"] == "/?sort=top&view=horizon"


@pytest.mark.parametrize("target", ["https://evil.example", "//evil.example", "/\\evil.example", "javascript:alert(1)",
                                    "/ok\r\nSet-Cookie: x=1"])
def test_next_never_leaves_the_site(target):
    assert safe_next(target) == "/"


async def test_signed_out_visitor_is_sent_to_sign_in_for_the_staff_area(client):
    response = await client.get("/admin")
    assert response.status_code == 303
    assert response.headers["location"] == "/login?next=/admin"


async def test_staff_area_is_a_404_for_a_customer(client, session):

    customer = make_user(session)
    sign_in(client, session, customer)
    response = await client.get("/admin")
    assert response.status_code == 404


async def test_change_password(client, session):
    admin = make_admin(session)
    sign_in(client, session, admin)
    bad = await post_form(client, "/account/password", {"current_password": "nope", "new_password": "short",
                                                         "confirm_password": "other"}, page="/account/password")
    assert bad.status_code == 422
    assert "not your current password" in bad.text and "at least 10" in bad.text and "differ" in bad.text
    good = await post_form(client, "/account/password", {"current_password": PASSWORD,
                                                          "new_password": "a much better passphrase",
                                                          "confirm_password": "a much better passphrase"},
                           page="/account/password")
    assert good.status_code == 303
    client.cookies.clear()
    assert (await _login(client, admin.email, PASSWORD)).status_code == 400
    assert (await _login(client, admin.email, "a much better passphrase")).status_code == 303


@pytest.fixture
async def other_browser(app):  # type: ignore[no-untyped-def]
    """A second browser on the same app (cookies of its own); `client` started the app's lifespan."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


async def _change_password(client, current, new):
    return await post_form(client, "/account/password", {"current_password": current, "new_password": new,
                                                          "confirm_password": new}, page="/account/password")


class TestChangingThePassword:
    async def test_ends_every_other_session_and_gives_this_browser_a_new_one(self, client, other_browser, session):
        pm = make_pm(session)
        laptop = (await _login(client, pm.email, PASSWORD)).cookies["ahead_session"]
        await _login(other_browser, pm.email, PASSWORD)
        assert (await other_browser.get("/admin")).status_code == 200

        changed = await _change_password(client, PASSWORD, "a much better passphrase")
        assert changed.status_code == 303
        assert "signed out everywhere else" in (await client.get(changed.headers["location"])).text
        rotated = changed.cookies.get("ahead_session")
        assert rotated and rotated != laptop  # a new session id for the browser that changed it
        assert (await client.get("/admin")).status_code == 200

        kicked_out = await other_browser.get("/admin")
        assert kicked_out.status_code == 303 and kicked_out.headers["location"].startswith("/login")
        client.cookies.set("ahead_session", laptop)  # the id it had before the change is dead too
        assert (await client.get("/admin")).status_code == 303
        assert session.scalar(select(func.count()).select_from(UserSession).where(UserSession.user_id == pm.id)) == 1

    async def test_a_wrong_current_password_changes_nothing_and_ends_nothing(self, client, other_browser, session):
        pm = make_pm(session)
        await _login(client, pm.email, PASSWORD)
        await _login(other_browser, pm.email, PASSWORD)
        refused = await _change_password(client, "not my password", "a much better passphrase")
        assert refused.status_code == 422 and "not your current password" in refused.text
        assert (await other_browser.get("/admin")).status_code == 200
        assert (await client.get("/admin")).status_code == 200
        other_browser.cookies.clear()
        assert (await _login(other_browser, pm.email, PASSWORD)).status_code == 303
