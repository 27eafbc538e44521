"""Headers on every response, and CSRF on every form POST."""


import secrets

import pytest
from sqlalchemy import func, select

from app.accounts.models import UserSession
from app.deps import SESSION_COOKIE
from app.voting import service as voting
from tests.factories import PASSWORD, make_admin, make_item, make_pm, make_user
from tests.helpers.csrf import page_token, unmasked_tokens
from tests.helpers.http import CSRF_FIELD, CSRF_META, client_for, csrf_token, sign_in


async def test_security_headers_on_pages_errors_and_api(client):
    for path in ("/", "/items/nothere1", "/api/v1/items/nothere1", "/login", "/static/app.css"):
        response = await client.get(path)
        csp = response.headers["content-security-policy"]
        assert "frame-ancestors 'none'" in csp, path
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp, path
        assert response.headers["x-content-type-options"] == "nosniff", path
        assert response.headers["referrer-policy"], path


async def test_pages_have_no_inline_script(client):
    response = await client.get("/")
    assert "<script>" not in response.text
    assert "<script src=" in response.text


async def test_login_post_without_csrf_token_is_refused(client, session):
    admin = make_admin(session)
    await client.get("/login")
    response = await client.post("/login", data={"email": admin.email, "password": PASSWORD})
    assert response.status_code == 403
    assert "This form can no longer be sent" in response.text and "Nothing was changed" in response.text
    assert session.scalar(select(func.count()).select_from(UserSession)) == 0


async def test_csrf_token_from_another_cookie_is_refused(client, session):
    admin = make_admin(session)
    token = await csrf_token(client)
    client.cookies.set("ahead_csrf", "someone-elses-cookie")
    response = await client.post("/login", data={"email": admin.email, "password": PASSWORD, "csrf_token": token})
    assert response.status_code == 403


async def test_unknown_page_is_a_friendly_404_in_the_site_look(client):
    response = await client.get("/no/such/page")
    assert response.status_code == 404
    assert "Page not found" in response.text
    assert 'class="site-header"' in response.text


async def test_a_trailing_slash_redirects_relatively_never_to_the_host_header(client, session):
    """Starlette's own redirect was built from the Host header, for a POST too (307: body and CSRF token sent
    again): behind a proxy passing Host through, a link to "/changelog/" led to the attacker's site."""
    item = make_item(session, title="Slash")
    evil = {"host": "evil.example"}
    moved = await client.get("/changelog/?page=2", headers=evil)
    assert moved.status_code == 308 and moved.headers["location"] == "/changelog?page=2"
    assert (await client.head("/changelog/", headers=evil)).headers["location"] == "/changelog"
    posted = await client.post(f"/items/{item.public_id}/vote/", headers=evil, data={"importance": "important"})
    assert posted.status_code == 404 and "location" not in posted.headers
    for nowhere in ("/no-such-page/", "/%2Fevil.example/"):
        answer = await client.get(nowhere, headers=evil)
        assert answer.status_code == 404 and "location" not in answer.headers, nowhere


async def test_unknown_api_path_answers_json(client):
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_one_persons_sign_in_never_leaks_into_the_next_request(client, session):

    anonymous_first = await client.get("/")
    assert "Sign in" in anonymous_first.text
    pm = make_pm(session, display_name="Pat Example")
    sign_in(client, session, pm)
    assert "Pat Example" in (await client.get("/")).text
    client.cookies.delete("ahead_session")
    assert "Pat Example" not in (await client.get("/")).text


async def test_a_crash_shows_the_500_page_in_the_site_look_even_when_signed_in(app, session):
    import httpx

    from app.deps import CurrentViewer

    @app.get("/boom-for-test")
    async def boom(viewer: CurrentViewer) -> None:
        assert viewer.user is not None
        raise RuntimeError("kaboom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        sign_in(c, session, make_pm(session))
        assert (await c.get("/")).status_code == 200  # the user is loaded on a normal page
        response = await c.get("/boom-for-test")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert 'class="site-header"' in response.text
    assert "kaboom" not in response.text and "Traceback" not in response.text


class TestCsrfTokenBelongsToItsSession:
    async def test_a_token_from_before_sign_in_is_refused_after_it_and_the_next_page_has_one_that_works(
            self, client, session):
        pm = make_pm(session)
        before = await csrf_token(client, "/login")
        signed_in = await client.post("/login", data={"email": pm.email, "password": PASSWORD, "csrf_token": before})
        assert signed_in.status_code == 303

        stale = await client.post("/logout", data={"csrf_token": before})
        assert stale.status_code == 403
        assert session.scalar(select(func.count()).select_from(UserSession)) == 1  # still signed in

        fresh = await csrf_token(client, signed_in.headers["location"])
        assert fresh != before
        assert (await client.post("/logout", data={"csrf_token": fresh})).status_code == 303
        assert session.scalar(select(func.count()).select_from(UserSession)) == 0

    async def test_a_token_minted_for_a_visitor_does_not_work_with_someone_elses_session(self, app, client, session):
        """Someone who can plant a cookie in the victim's browser (a sibling subdomain can set `ahead_csrf` over
        http) fetches a CSRF cookie and its token as a visitor; with the victim's session they are useless."""
        attacker_token = await csrf_token(client, "/")
        attacker_cookie = client.cookies.get("ahead_csrf")
        sign_in(client, session, make_pm(session))  # the victim's session; the planted CSRF cookie stays
        assert client.cookies.get("ahead_csrf") == attacker_cookie

        response = await client.post("/logout", data={"csrf_token": attacker_token})
        assert response.status_code == 403
        assert session.scalar(select(func.count()).select_from(UserSession)) == 1
        # the victim's own page has the token for their session, with the same CSRF cookie
        own = await csrf_token(client, "/")
        assert client.cookies.get("ahead_csrf") == attacker_cookie
        assert (await client.post("/logout", data={"csrf_token": own})).status_code == 303

    async def test_the_page_answered_after_deleting_ones_account_carries_a_visitor_token(self, client, session):

        user = make_user(session)
        sign_in(client, session, user)
        token = await csrf_token(client, "/me")
        page = await client.post("/me/delete", data={"confirm_email": user.email, "csrf_token": token})
        assert page.status_code == 200
        client.cookies.delete("ahead_session")  # as the browser does on the answer's Set-Cookie
        # a visitor's page with no form carries no token at all; the sign-in form's is a visitor's too
        assert CSRF_META.search(page.text) is None
        visitor_token = await csrf_token(client, "/login")
        # a visitor's form (sign-in) accepts it: the page's token was made for no session
        response = await client.post("/login", data={"email": "x@example.com", "password": "nope",
                                                     "csrf_token": visitor_token})
        assert response.status_code == 400  # the form was accepted and the sign-in simply failed


class TestOrigin:
    """Unsafe requests are checked against BASE_URL (http://testserver in these tests)."""

    async def _login(self, client, **headers):  # type: ignore[no-untyped-def]
        token = await csrf_token(client, "/login")
        return await client.post("/login", data={"email": "nobody@example.com", "password": "x",
                                                  "csrf_token": token}, headers=headers)

    @pytest.mark.parametrize("origin", ["https://evil.example", "http://testserver.evil.example",
                                        "https://testserver", "http://testserver:8080", "null", "garbage"])
    async def test_another_origin_is_refused_with_a_page_that_says_why(self, client, origin):
        response = await self._login(client, origin=origin)
        assert response.status_code == 403
        assert "came from a page that is not part of this portal" in response.text
        assert 'class="site-header"' in response.text

    async def test_the_referer_counts_when_there_is_no_origin(self, client):
        refused = await self._login(client, referer="https://evil.example/page?x=1")
        assert refused.status_code == 403 and "not part of this portal" in refused.text
        accepted = await self._login(client, referer="http://testserver/login?next=/admin")
        assert accepted.status_code == 400  # past the checks: the sign-in itself failed

    async def test_same_origin_and_no_header_at_all_rely_on_the_token(self, client):
        assert (await self._login(client, origin="http://testserver")).status_code == 400
        assert (await self._login(client, origin="HTTP://TestServer:80")).status_code == 400
        assert (await self._login(client)).status_code == 400  # headers stripped by a privacy tool
        no_token = await client.post("/login", data={"email": "a@example.com", "password": "x"},
                                     headers={"origin": "http://testserver"})
        assert no_token.status_code == 403 and "form can no longer be sent" in no_token.text

    async def test_the_json_api_answers_json(self, client, session):

        item = make_item(session)
        sign_in(client, session, make_user(session))
        token = await csrf_token(client, "/")
        response = await client.post(f"/api/v1/items/{item.public_id}/vote", json={"importance": "important"},
                                     headers={"x-csrf-token": token, "origin": "https://evil.example"})
        assert response.status_code == 403
        assert response.json()["error"] == "cross_origin"
        same = await client.post(f"/api/v1/items/{item.public_id}/vote", json={"importance": "important"},
                                 headers={"x-csrf-token": token, "origin": "http://testserver"})
        assert same.status_code == 200

    async def test_reading_is_never_refused(self, client):
        response = await client.get("/login", headers={"origin": "https://evil.example"})
        assert response.status_code == 200

    async def test_without_base_url_the_address_the_request_was_sent_to_counts(self, database, connection):
        """Development without BASE_URL (production refuses to start so): a portal opened as
        http://localhost:8000 or http://testserver must accept its own forms, not only the guessed
        http://127.0.0.1:PORT."""
        from app.config import Settings

        settings = Settings(database_url=database.url, secret_key="k" * 40, redis_url="", _env_file=None)
        assert not settings.base_url_given
        async with client_for(settings, database, connection) as client:
            assert (await self._login(client, origin="http://testserver")).status_code == 400
            assert (await self._login(client, origin=settings.base_url)).status_code == 403


class TestHostPrefixedCookiesOverHttps:
    """With an https BASE_URL the session, CSRF and OIDC-state cookies are `__Host-` cookies (Secure, Path=/,
    no Domain): no sibling subdomain and no http page on the same host can plant or overwrite them."""

    @staticmethod
    def _cookie(response, name):  # type: ignore[no-untyped-def]
        found = [h for h in response.headers.get_list("set-cookie") if h.startswith(name + "=")]
        assert found, f"no {name} cookie in {response.headers.get_list('set-cookie')}"
        attributes = {part.strip().split("=")[0].lower() for part in found[0].split(";")[1:]}
        path = [part.strip() for part in found[0].split(";") if part.strip().lower().startswith("path=")]
        return attributes, path

    async def test_sign_in_and_out_over_https(self, database, connection, session):
        from app.config import Settings

        settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="https://roadmap.example",
                            redis_url="", _env_file=None)
        pm = make_pm(session, display_name="Pat Secure")
        async with client_for(settings, database, connection, base_url="https://roadmap.example") as client:
            page = await client.get("/login")
            attributes, path = self._cookie(page, "__Host-ahead_csrf")
            assert {"secure", "httponly"} <= attributes and "domain" not in attributes and path == ["Path=/"]
            assert "ahead_csrf" not in [c.split("=")[0] for c in page.headers.get_list("set-cookie")]

            token = CSRF_FIELD.search(page.text).group(1)
            signed_in = await client.post("/login", data={"email": pm.email, "password": PASSWORD,
                                                          "csrf_token": token},
                                          headers={"origin": "https://roadmap.example"})
            assert signed_in.status_code == 303
            attributes, path = self._cookie(signed_in, "__Host-ahead_session")
            assert {"secure", "httponly"} <= attributes and "domain" not in attributes and path == ["Path=/"]
            assert "Pat Secure" in (await client.get("/admin")).text

            # the plain-named cookie a sibling subdomain could set is not read at all
            client.cookies.set("ahead_session", client.cookies.get("__Host-ahead_session"))
            client.cookies.delete("__Host-ahead_session")
            assert "Pat Secure" not in (await client.get("/")).text

    async def test_the_flash_message_cookie_is_host_prefixed_too(self, database, connection, session):
        """It is signed, not secret, and may carry an address or an invitation link."""
        from app.config import Settings

        settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="https://roadmap.example",
                            redis_url="", _env_file=None)
        pm = make_pm(session)
        async with client_for(settings, database, connection, base_url="https://roadmap.example") as client:
            token = CSRF_FIELD.search((await client.get("/login")).text).group(1)
            await client.post("/login", data={"email": pm.email, "password": PASSWORD, "csrf_token": token},
                              headers={"origin": "https://roadmap.example"})
            token = CSRF_META.search((await client.get("/")).text).group(1)
            signed_out = await client.post("/logout", data={"csrf_token": token},
                                           headers={"origin": "https://roadmap.example"})
            attributes, path = self._cookie(signed_out, "__Host-ahead_flash")
            assert {"secure", "httponly"} <= attributes and "domain" not in attributes and path == ["Path=/"]
            shown = await client.get("/")
            assert "You are signed out." in shown.text
            cleared = [h for h in shown.headers.get_list("set-cookie") if h.startswith("__Host-ahead_flash=")]
            assert cleared and "secure" in cleared[0].lower()  # a __Host- cookie is only replaced by a Secure one
            assert "You are signed out." not in (await client.get("/login")).text

    async def test_the_oidc_state_cookie_is_host_prefixed_over_https_and_stays_under_auth_over_http(
            self, database, connection):
        from app.config import Settings

        for base, name, expected_path in (("https://roadmap.example", "__Host-ahead_oidc", "Path=/"),
                                          ("http://testserver", "ahead_oidc", "Path=/auth")):
            settings = Settings(database_url=database.url, secret_key="k" * 40, base_url=base, redis_url="",
                                _env_file=None)
            async with client_for(settings, database, connection, base_url=base,
                                   extra_route=_touch_oidc_session) as client:
                response = await client.get("/auth/test-state")
                attributes, path = self._cookie(response, name)
                assert [p.capitalize() for p in path] == [expected_path.capitalize()]
                assert ("secure" in attributes) == base.startswith("https")

    async def test_over_http_the_names_stay_as_they_were(self, client, session):
        page = await client.get("/login")
        assert any(h.startswith("ahead_csrf=") for h in page.headers.get_list("set-cookie"))
        assert not any(h.startswith("__Host-") for h in page.headers.get_list("set-cookie"))


def _touch_oidc_session(app):  # type: ignore[no-untyped-def]
    from fastapi import Request

    @app.get("/auth/test-state")
    async def touch(request: Request) -> dict[str, str]:
        request.session["state"] = "x"
        return {}


@pytest.mark.parametrize("path", ["/", "ITEM"])  # a kept page, filled per person; a page rendered per request
async def test_each_answer_carries_the_token_masked_afresh_and_each_mask_works(client, session, path):
    """The token sits in compressed pages beside text anyone can choose (the search box shows `q`): the same
    value in every answer would let compressed lengths give it away a character at a time (BREACH). Each answer
    masks it afresh; the page's ETag stays the same, so a browser's copy is still revalidated."""
    item, customer = make_item(session, title="Shift swaps"), make_user(session)
    sign_in(client, session, customer)
    path = item.path if path == "ITEM" else path
    answers = [await client.get(path) for _ in range(3)]
    tokens = [page_token(answer.text) for answer in answers]
    assert len(set(tokens)) == 3 and all(len(token) == 128 for token in tokens)
    assert len({unmasked_tokens(answer.text) for answer in answers}) == 1  # the same page but for the mask
    assert len({answer.headers["etag"] for answer in answers}) == 1
    assert (await client.get(path, headers={"if-none-match": answers[0].headers["etag"]})).status_code == 304
    for token, action in zip(tokens, ["follow", "unfollow", "follow"], strict=True):
        response = await client.post(f"/items/{item.public_id}/{action}", data={"csrf_token": token})
        assert response.status_code == 303, action
    assert voting.is_following(session, item=item, user=customer)


async def test_a_changed_made_up_or_other_sessions_token_is_refused_and_a_bare_one_still_works(app, client, session):
    item, customer, other = make_item(session), make_user(session), make_user(session)
    sign_in(client, session, other)
    others = page_token((await client.get("/me")).text)
    sign_in(client, session, customer)
    token = page_token((await client.get("/me")).text)
    changed = token[:100] + ("0" if token[100] != "0" else "1") + token[101:]
    bare = app.state.csrf.form_token(client.cookies["ahead_csrf"], client.cookies[SESSION_COOKIE])
    for refused in (others, changed, secrets.token_hex(64), token.upper(), token[:64], token + "0", ""):
        response = await client.post(f"/items/{item.public_id}/follow", data={"csrf_token": refused})
        assert response.status_code == 403, refused
    assert not voting.is_following(session, item=item, user=customer)
    # A page rendered before tokens were masked (open in a browser across an upgrade) still posts.
    assert (await client.post(f"/items/{item.public_id}/follow", data={"csrf_token": bare})).status_code == 303
    assert voting.is_following(session, item=item, user=customer)
