"""A browser still sending the cookie of a session that ended elsewhere (signed out on another device, a password
changed, the account closed, expired) is told to drop it, and nothing it does next trips over the change."""

from __future__ import annotations

import pytest

from app.accounts import service as accounts
from tests.factories import PASSWORD, make_item, make_user
from tests.helpers.http import CSRF_FIELD, CSRF_META, post_form
from tests.helpers.sso import claims, hs256, sso, sso_settings

pytestmark = pytest.mark.anyio


def _session_cookies(response) -> list[str]:  # type: ignore[no-untyped-def]
    return [value for value in response.headers.get_list("set-cookie") if value.startswith("ahead_session=")]


async def _ended_elsewhere(client, session):  # type: ignore[no-untyped-def]
    """A customer signed in in `client`, whose sessions then all end on the server (as a password change does);
    with the token their pages carried while signed in."""
    customer = make_user(session, display_name="Rosa Ended")
    signed_in = await post_form(client, "/login", {"email": customer.email, "password": PASSWORD}, page="/login")
    assert signed_in.status_code == 303
    page = await client.get("/")
    assert "Sign out" in page.text
    accounts.end_all_sessions(session, user=customer)
    session.flush()
    token = CSRF_META.search(page.text)
    assert token is not None
    return customer, token.group(1)


async def test_the_next_page_expires_the_cookie_and_the_pages_after_it_are_a_visitors(client, session):
    await _ended_elsewhere(client, session)
    page = await client.get("/")
    assert page.status_code == 200 and "Sign in" in page.text and "Rosa Ended" not in page.text
    [expired] = _session_cookies(page)
    assert "Max-Age=0" in expired and "Path=/" in expired and "HttpOnly" in expired
    assert "ahead_session" not in client.cookies  # the client dropped it, as a browser does

    after = await client.get("/")
    assert _session_cookies(after) == []
    assert after.headers["cache-control"] == "no-cache"  # a visitor's answer again, not "private"


async def test_a_form_on_the_page_that_expired_the_cookie_is_accepted(client, session):
    """The page's forms carry a token for no session, as the browser's next request has none: signing in from
    the page that dropped the cookie works at the first try."""
    customer, _ = await _ended_elsewhere(client, session)
    login = await client.get("/login")
    assert _session_cookies(login) and "ahead_session" not in client.cookies
    token = CSRF_FIELD.search(login.text)
    assert token is not None
    signed_in = await client.post("/login", data={"email": customer.email, "password": PASSWORD,
                                                  "csrf_token": token.group(1)})
    assert signed_in.status_code == 303, signed_in.text[:300]
    assert "Rosa Ended" in (await client.get("/me")).text


async def test_a_vote_with_the_ended_cookie_expires_it_too(client, session):
    item = make_item(session)
    _, token = await _ended_elsewhere(client, session)
    voted = await client.post(f"/items/{item.public_id}/vote", data={"importance": "2"},
                              headers={"Accept": "application/json", "X-CSRF-Token": token})
    assert voted.status_code == 401, voted.text[:300]
    assert _session_cookies(voted) and "ahead_session" not in client.cookies


class TestSigningInWithTheEndedCookieStillSent:
    @pytest.fixture
    def settings(self, database_url):  # type: ignore[no-untyped-def]
        return sso_settings(database_url)

    async def test_the_new_session_is_kept_not_expired_after_it(self, client, session):
        """The host app's sign-in link looks at who is signed in first (someone else is asked before switching):
        the ended cookie is nobody, and the answer sets the new session's cookie alone."""
        await _ended_elsewhere(client, session)
        signed_in = await sso(client, hs256(claims()))
        [cookie] = _session_cookies(signed_in)
        assert "Max-Age=0" not in cookie
        assert client.cookies.get("ahead_session")
        assert "Sign out" in (await client.get("/")).text
