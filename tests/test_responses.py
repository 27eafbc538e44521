"""How answers reach clients (app/responses.py, app/assets.py): HEAD wherever GET is, static files."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator

import pytest
from fastapi.routing import iter_route_contexts
from starlette.convertors import IntegerConvertor

from app import assets
from app.assets import Assets
from app.config import ROOT, Settings
from app.main import create_app
from tests.factories import make_admin, make_item
from tests.helpers.http import sign_in


def _get_paths() -> Iterator[str]:
    """Every GET route of the app with its parameters filled (a number, or a word that names nothing)."""
    app = create_app(Settings(database_url="sqlite://", secret_key="k" * 40, _env_file=None))  # type: ignore[call-arg]
    for context in iter_route_contexts(app.routes):
        if "GET" not in (context.methods or ()):
            continue
        path = context.path
        for name, convertor in context.param_convertors.items():
            value = "1" if isinstance(convertor, IntegerConvertor) else "nothing-here"
            path = path.replace("{" + name + (":int" if value == "1" else "") + "}", value)
        yield path


GET_PATHS = sorted(set(_get_paths()))


def test_the_walk_finds_the_portal_and_the_api():
    assert {"/", "/changelog.atom", "/api/v1/items", "/healthz", "/admin/items"} <= set(GET_PATHS)
    assert not [p for p in GET_PATHS if "{" in p]


class TestHead:
    @pytest.mark.parametrize("signed_in", [False, True], ids=["visitor", "admin"])
    async def test_every_get_route_answers_head_as_its_get(self, client, session, signed_in):
        make_item(session, title="Dark mode")
        if signed_in:
            sign_in(client, session, make_admin(session))
        refused, differ = [], []
        for path in GET_PATHS:
            got = await client.get(path)
            head = await client.head(path)
            if head.status_code == 405:
                refused.append(path)
            if head.status_code != got.status_code:
                differ.append((path, got.status_code, head.status_code))
                continue
            assert head.content == b"", path
            assert head.headers.get("content-type") == got.headers.get("content-type"), path
        # The one GET route that is not one: the vote's other methods, answered 405 with `Allow: POST, DELETE`.
        assert refused == ["/api/v1/items/nothing-here/vote"]
        assert differ == []

    async def test_a_page_gets_the_get_headers_and_no_body(self, client, session):
        make_item(session, title="Dark mode")
        got = await client.get("/")
        head = await client.head("/")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert head.headers["content-security-policy"] == got.headers["content-security-policy"]

    @pytest.mark.parametrize("path", ["/static/app.css", "/healthz", "/changelog.atom", "/api/v1/items"])
    async def test_monitors_and_link_checkers(self, client, path):
        head = await client.head(path)
        assert head.status_code == 200 and head.content == b""


class TestStaticFiles:
    async def test_pages_name_static_files_by_their_content_kept_a_year(self, client):
        page = (await client.get("/")).text
        css = re.search(r'href="(/static/app\.[0-9a-f]{12}\.css)"', page)
        js = re.search(r'src="(/static/app\.[0-9a-f]{12}\.js)"', page)
        assert css and js and re.search(r'href="/static/favicon\.[0-9a-f]{12}\.svg"', page)
        got = await client.get(css.group(1))
        assert got.status_code == 200 and got.headers["content-type"].startswith("text/css")
        assert got.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert got.content == (ROOT / "static" / "app.css").read_bytes()
        assert (await client.get(js.group(1))).content == (ROOT / "static" / "app.js").read_bytes()

    @pytest.mark.parametrize("path", ["/static/app.css", "/static/app.0123456789ab.css"])
    async def test_the_plain_name_and_an_earlier_release_s_name_still_work_kept_briefly(self, client, path):
        got = await client.get(path)
        assert got.status_code == 200 and got.content == (ROOT / "static" / "app.css").read_bytes()
        assert got.headers["cache-control"] == "public, max-age=300"

    @pytest.mark.parametrize("coding", ["br", "gzip"])
    async def test_compressed_for_clients_that_take_it(self, client, coding):
        url = assets.static.url("app.css")
        got = await client.get(url, headers={"accept-encoding": coding})
        assert got.headers["content-encoding"] == coding and "accept-encoding" in got.headers["vary"].lower()
        assert int(got.headers["content-length"]) < len(got.content) / 3  # httpx decodes; the wire was smaller
        assert got.content == (ROOT / "static" / "app.css").read_bytes()
        plain = await client.get(url, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers and plain.content == got.content

    async def test_revalidation_and_what_is_not_there(self, client):
        url = assets.static.url("app.js")
        first = await client.get(url)
        again = await client.get(url, headers={"if-none-match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert (await client.get("/static/nothing.css")).status_code == 404
        assert (await client.get("/static/../app/config.py")).status_code == 404
        assert (await client.post("/static/app.css")).status_code in (403, 405)  # CSRF may refuse it first

    def test_a_file_changed_while_developing_gets_a_new_name(self, tmp_path):
        (tmp_path / "site.css").write_text("a { color: red }")
        watched = Assets(tmp_path, watch=True)
        before = watched.url("site.css")
        (tmp_path / "site.css").write_text("a { color: blue }")
        os.utime(tmp_path / "site.css", ns=(time.time_ns() + 10**9,) * 2)
        assert watched.url("site.css") != before
        with pytest.raises(LookupError):
            watched.url("nothing.css")
