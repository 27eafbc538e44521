"""Headers on every response, and CSRF on every form POST."""

from sqlalchemy import func, select

from app.accounts.models import UserSession
from tests.conftest import csrf_token
from tests.factories import PASSWORD, make_admin


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
    assert "form has expired" in response.text
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


async def test_unknown_api_path_answers_json(client):
    response = await client.get("/api/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


async def test_one_persons_sign_in_never_leaks_into_the_next_request(client, session):
    from tests.conftest import sign_in
    from tests.factories import make_pm

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
    from tests.conftest import sign_in
    from tests.factories import make_pm

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
