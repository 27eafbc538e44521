"""Branding: what an admin sets in /admin/settings is what every visitor sees."""

from __future__ import annotations

import re

import pytest

from tests.admin.helpers import PNG, WEBP, branding_form
from tests.factories import make_admin
from tests.helpers.http import post_form, sign_in


# A real 1×1 PNG.
@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com")
    sign_in(client, session, user)
    return user


async def test_new_branding_shows_on_public_pages(client, session, admin):
    response = await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                               files={"logo": ("logo.png", PNG, "image/png")})
    assert response.status_code == 303
    assert "Branding saved" in (await client.get("/admin/settings")).text

    client.cookies.clear()  # a visitor
    board = await client.get("/")
    header = board.text.split("</header>")[0]
    assert "Acme Roadmap" in header
    assert 'href="https://app.acme.example/"' in header and "Open Acme" in header
    assert re.search(r'<img src="/branding/logo\?v=1"', header)
    assert "<title>Roadmap · Acme Roadmap</title>" in board.text

    css = await client.get("/branding.css")
    assert "--accent: #ff5500" in css.text
    logo = await client.get("/branding/logo")
    assert logo.status_code == 200
    assert logo.headers["content-type"] == "image/png" and logo.content == PNG


async def test_invalid_colour_is_refused_and_keeps_what_was_typed(client, session, admin):
    response = await post_form(client, "/admin/settings", branding_form(accent_color="purple"),
                               page="/admin/settings")
    assert response.status_code == 422
    assert "Use a colour like #4f46e5." in response.text
    assert 'value="Acme Roadmap"' in response.text and 'value="purple"' in response.text
    assert 'aria-invalid="true"' in response.text

    board = await client.get("/")
    assert "Acme Roadmap" not in board.text  # nothing half-saved


async def test_picker_colour_is_used_when_the_text_was_left_alone(client, session, admin):
    await post_form(client, "/admin/settings", branding_form(accent_color="#4f46e5", accent_picker="#00aa77"),
                    page="/admin/settings")
    assert "--accent: #00aa77" in (await client.get("/branding.css")).text


async def test_logo_must_be_a_small_image(client, session, admin):
    text_file = await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                                files={"logo": ("logo.txt", b"hello, not an image", "text/plain")})
    assert text_file.status_code == 422
    assert "Upload a PNG, JPEG, GIF or WebP image." in text_file.text
    assert 'value="Acme Roadmap"' in text_file.text

    big = PNG + b"\0" * (512 * 1024)
    too_big = await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                              files={"logo": ("big.png", big, "image/png")})
    assert too_big.status_code == 422
    assert "512 KB at most" in too_big.text
    assert (await client.get("/branding/logo")).status_code == 404


async def test_logo_can_be_replaced_and_removed(client, session, admin):
    await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                    files={"logo": ("logo.png", PNG, "image/png")})
    await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                    files={"logo": ("logo.webp", WEBP, "image/webp")})
    logo = await client.get("/branding/logo")
    assert logo.headers["content-type"] == "image/webp"
    page = await client.get("/admin/settings")
    assert 'alt="Current logo"' in page.text and "Remove the logo" in page.text

    # Saving without choosing a file keeps the logo.
    await post_form(client, "/admin/settings", branding_form(portal_name="Acme"), page="/admin/settings",
                    files={"logo": ("", b"", "application/octet-stream")})
    assert (await client.get("/branding/logo")).status_code == 200

    await post_form(client, "/admin/settings", branding_form(remove_logo="1"), page="/admin/settings")
    assert (await client.get("/branding/logo")).status_code == 404
    assert "/branding/logo" not in (await client.get("/")).text


async def test_the_logo_is_kept_a_day_only_under_its_own_address_which_no_other_logo_ever_has(client, session, admin):
    """`?v=` with any version answered the logo with `public, max-age=86400`: anyone could ask for the next version
    before an admin uploaded it, and a shared cache would serve the old logo under the new address for a day (a
    walk-through). And removing the logo started the count again, so a later logo took an address an earlier had."""
    await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                    files={"logo": ("logo.png", PNG, "image/png")})
    client.cookies.clear()  # a visitor
    assert re.search(r'<img src="/branding/logo\?v=1"', (await client.get("/")).text)
    linked = await client.get("/branding/logo?v=1")
    assert linked.headers["cache-control"] == "public, max-age=86400" and linked.content == PNG
    assert (await client.get("/branding/logo?v=1", headers={"If-None-Match": linked.headers["etag"]})).status_code == 304
    for other in ("?v=2", "?v=01", ""):  # made up before the next upload, spelled otherwise, or none
        answer = await client.get(f"/branding/logo{other}")
        assert answer.status_code == 200 and answer.headers["cache-control"] == "no-cache", other

    sign_in(client, session, admin)
    await post_form(client, "/admin/settings", branding_form(remove_logo="1"), page="/admin/settings")
    await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                    files={"logo": ("logo.webp", WEBP, "image/webp")})
    client.cookies.clear()
    board = (await client.get("/")).text
    assert re.search(r'<img src="/branding/logo\?v=2"', board) and "?v=1" not in board  # not the removed one's
    again = await client.get("/branding/logo?v=2")
    assert again.content == WEBP and again.headers["cache-control"] == "public, max-age=86400"
    assert again.headers["etag"] != linked.headers["etag"]
    assert (await client.get("/branding/logo?v=1")).headers["cache-control"] == "no-cache"


async def test_branding_change_is_in_the_audit_log(client, session, admin):
    await post_form(client, "/admin/settings", branding_form(), page="/admin/settings")
    log = await client.get("/admin/audit?type=setting")
    assert log.status_code == 200
    row = log.text.split("Portal name:")[1].split("</li>")[0]
    assert "“Ahead”" in row and "“Acme Roadmap”" in row and "→" in row
    assert "ada@example.com" in log.text
