"""How answers reach clients (app/responses.py, app/assets.py): HEAD wherever GET is, conditional GET,
Cache-Control, compression, static files."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.routing import iter_route_contexts
from starlette.convertors import IntegerConvertor

from app import assets
from app.accounts import service as accounts
from app.assets import Assets
from app.config import ROOT, Settings
from app.deps import SESSION_COOKIE
from app.main import create_app
from app.responses import ResponseMiddleware, chosen_coding, none_match, weak_etag
from app.roadmap.models import Visibility
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_user
from tests.feedback.helpers import customer_in_segment
from tests.helpers.http import client_for, sign_in


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
        # The GET route that is not one: the vote's other methods, answered 405 with `Allow: POST, DELETE`. The GETs
        # that act (sign-in steps spend one-time tokens) refuse a HEAD (tests/accounts), but a provider this portal
        # does not have, or the host app's link where it is not set up, is 404 either way.
        acting = [p for p in GET_PATHS if p.startswith(("/auth/", "/sso/"))]
        assert acting == ["/auth/nothing-here/callback", "/auth/nothing-here/start", "/sso/jwt"]
        assert refused == ["/api/v1/items/nothing-here/vote"]
        assert differ == []

    async def test_a_page_gets_the_get_headers_and_no_body(self, client, session):
        make_item(session, title="Dark mode")
        plain = {"accept-encoding": "identity"}  # Content-Length is then the length of the page itself
        got = await client.get("/", headers=plain)
        head = await client.head("/", headers=plain)
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == got.headers["content-length"] == str(len(got.content))
        assert head.headers["content-security-policy"] == got.headers["content-security-policy"]

    async def test_a_method_not_allowed_names_head_where_get_is(self, client):
        refused = await client.post("/changelog")
        assert refused.status_code == 405 and refused.headers["allow"] == "GET, HEAD"
        assert (await client.head("/changelog")).status_code == 200  # as the answer says

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


def _middleware(app: Any) -> ResponseMiddleware:
    layer = app.middleware_stack
    while not isinstance(layer, ResponseMiddleware):
        layer = layer.app
    return layer


class TestConditionalGet:
    async def test_a_second_get_with_the_etag_gets_304_without_a_body(self, client, session):
        make_item(session, title="Dark mode")
        for path in ("/", "/changelog.atom", "/api/v1/items"):
            first = await client.get(path)
            etag = first.headers["etag"]
            assert etag.startswith('W/"') and first.status_code == 200
            again = await client.get(path, headers={"if-none-match": etag})
            assert again.status_code == 304 and again.content == b"", path
            assert again.headers["etag"] == etag and "cache-control" in again.headers
            assert (await client.get(path, headers={"if-none-match": 'W/"other"'})).status_code == 200

    async def test_a_vote_or_an_edit_changes_the_etag(self, client, session):
        item = make_item(session, title="Dark mode")
        before = await client.get("/")
        voting.cast_vote(session, item=item, user=make_user(session), importance=Importance.critical)
        session.flush()
        after_vote = await client.get("/", headers={"if-none-match": before.headers["etag"]})
        assert after_vote.status_code == 200 and after_vote.headers["etag"] != before.headers["etag"]
        item.title = "Dark mode, everywhere"
        session.flush()
        after_edit = await client.get("/", headers={"if-none-match": after_vote.headers["etag"]})
        assert after_edit.status_code == 200 and "Dark mode, everywhere" in after_edit.text
        for path in ("/changelog.atom", "/api/v1/items"):
            old = (await client.get(path)).headers["etag"]
            make_item(session, title=f"New for {path}", stage_slug="released")  # in the changelog too
            session.flush()
            assert (await client.get(path, headers={"if-none-match": old})).status_code == 200

    async def test_a_signed_in_person_never_gets_a_304_for_another_person_s_page(self, app, client, session):
        item = make_item(session, title="Dark mode")
        ann, bob = make_user(session), make_user(session)
        voting.cast_vote(session, item=item, user=ann, importance=Importance.critical)  # the API shows her vote
        sign_in(client, session, ann)
        ann_page = await client.get("/")
        assert (await client.get("/", headers={"if-none-match": ann_page.headers["etag"]})).status_code == 304
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as other:
            sign_in(other, session, bob)
            for path in ("/", item.path, "/api/v1/items"):
                mine = await client.get(path)
                theirs = await other.get(path, headers={"if-none-match": mine.headers["etag"]})
                assert theirs.status_code == 200 and theirs.headers["etag"] != mine.headers["etag"], path

    async def test_an_answer_that_sets_a_cookie_is_never_a_304(self, client):
        """`If-None-Match: *` matches any page; a 304 that sets a new CSRF cookie would leave the browser's copy of the
        form with a token made for the old one (a walk-through's finding)."""
        client.cookies.clear()
        page = await client.get("/login", headers={"if-none-match": "*"})
        assert page.status_code == 200 and "set-cookie" in page.headers and 'name="csrf_token"' in page.text
        again = await client.get("/login", headers={"if-none-match": page.headers["etag"]})
        assert again.status_code == 304 and "set-cookie" not in again.headers  # the cookie kept: the same page

    async def test_what_is_not_kept_gets_no_etag(self, client, session):
        sign_in(client, session, make_admin(session))
        tokens = await client.get("/admin/tokens")
        assert tokens.headers["cache-control"] == "no-store" and "etag" not in tokens.headers


class TestCacheControl:
    async def test_an_error_answered_as_a_page_or_as_json_by_accept_varies_on_it(self, client):
        """The same address answers an HTML page or JSON by the Accept header (a walk-through noted no Vary)."""
        page = await client.get("/no-such-page")
        data = await client.get("/no-such-page", headers={"accept": "application/json"})
        assert page.status_code == data.status_code == 404
        assert page.headers["content-type"].startswith("text/html") and data.json()["error"] == "not_found"
        for answer in (page, data):
            assert "accept" in [v.strip().lower() for v in answer.headers["vary"].split(",")]
        api = await client.get("/api/v1/no-such-thing")  # JSON whatever is asked
        assert "accept" not in api.headers.get("vary", "").lower().replace("accept-encoding", "")

    async def test_off_by_default_no_shared_cache_keeps_anything(self, client, session):
        make_item(session, title="Dark mode")
        for path in ("/changelog.atom", "/api/v1/items", "/"):
            got = await client.get(path)
            assert "public" not in got.headers["cache-control"] and "no-cache" in got.headers["cache-control"]

    async def test_with_the_setting_a_cdn_may_keep_what_every_visitor_gets(self, settings, database, connection,
                                                                             session):
        make_item(session, title="Dark mode")
        async with client_for(settings.model_copy(update={"public_cache_seconds": 60}), database,
                              connection) as client:
            item = make_item(session, title="Public item")
            for path in ("/changelog.atom", "/api/v1/items", "/sitemap.xml", "/", item.path):
                client.cookies.clear()  # a visitor whose pages never minted a cookie (no form on them)
                got = await client.get(path)
                assert "set-cookie" not in got.headers, path
                assert got.headers["cache-control"] == "public, max-age=0, s-maxage=60", path
                assert {"cookie", "authorization"} <= {v.strip().lower() for v in got.headers["vary"].split(",")}, path
            # Never: a page that sets a cookie or holds a CSRF token, a health check, a signed-in person, a token.
            login = await client.get("/login")
            assert login.headers["cache-control"] == "private, no-cache"
            assert (await client.get("/healthz")).headers["cache-control"] == "no-cache"
            bearer = await client.get("/api/v1/items", headers={"authorization": "Bearer ahead_nothing"})
            assert "public" not in bearer.headers.get("cache-control", "")
            staff = make_admin(session)
            internal = make_item(session, title="Internal plan", visibility=Visibility.internal)
            sign_in(client, session, make_user(session))
            for path in ("/", "/api/v1/items", "/changelog.atom"):
                assert (await client.get(path)).headers["cache-control"] == "private, no-cache", path
            # The session cookie spelled as the app still reads it, a space or a tab before "=", or after another
            # cookie: the staff's list (an internal item in it) is theirs, never public (a walk-through's went out
            # `public, s-maxage=60`)
            token = accounts.start_session(session, user=staff)
            client.cookies.clear()
            for cookie in (f"{SESSION_COOKIE} ={token}", f"{SESSION_COOKIE}\t= {token}", f"a=1;{SESSION_COOKIE} ={token}"):
                for path in ("/api/v1/items", f"/api/v1/items/{internal.public_id}"):
                    got = await client.get(path, headers={"cookie": cookie})
                    assert got.status_code == 200, (cookie, path)
                    assert got.headers["cache-control"] == "private, no-cache", (cookie, path)

    async def test_error_pages_and_redirects_are_never_kept_for_others(self, settings, database, connection, session):
        """With the setting on, only answers of 200 may be public: a signed-in person's 404, 403 or redirect holds
        their name and token, or names an item only they may see; a visitor's 404 for a customer-only item must not
        reach the customer. Found by a walk-through: these went out with no Cache-Control at all."""
        async with client_for(settings.model_copy(update={"public_cache_seconds": 60}), database,
                              connection) as client:
            item = make_item(session, title="Customer item", visibility=Visibility.customers)
            customer, _ = customer_in_segment(session)
            short = f"/items/{item.public_id}"
            for path in (item.path, short, "/items/zzzzzzzz/nothing", "/search?q=" + "x" * 201):
                client.cookies.clear()
                got = await client.get(path, follow_redirects=False)
                assert got.status_code in (404, 422), path
                assert got.headers["cache-control"] == "no-cache", path
            sign_in(client, session, customer)
            moved = await client.get(short, follow_redirects=False)
            assert moved.status_code == 301 and moved.headers["cache-control"] == "private, no-cache"
            for path in ("/items/zzzzzzzz/nothing", "/admin"):
                got = await client.get(path, follow_redirects=False)
                assert got.status_code in (303, 403, 404), path
                assert got.headers["cache-control"] == "private, no-cache", path

    async def test_an_address_answering_html_or_json_by_accept_varies_on_it(self, client, session):
        make_item(session, title="Shift swaps between teams")
        for accept in ("text/html", "application/json"):
            got = await client.get("/ideas/similar", params={"q": "shift swaps"}, headers={"accept": accept})
            assert got.status_code == 200
            assert "accept" in {v.strip().lower() for v in got.headers["vary"].split(",")}, accept


class TestCompression:
    @pytest.mark.parametrize("path", ["/", "/changelog.atom", "/api/v1/items?per_page=50"])
    async def test_every_accept_encoding_decodes_to_the_same_answer(self, client, session, path):
        for n in range(12):
            make_item(session, title=f"Item number {n} with a longer title to fill the page", stage_slug="released")
        plain = await client.get(path, headers={"accept-encoding": "identity"})
        assert "content-encoding" not in plain.headers
        assert "accept-encoding" in plain.headers["vary"].lower()
        for sent, coding in (("br", "br"), ("gzip", "gzip"), ("gzip, deflate, br, zstd", "br"),
                             ("br;q=0, gzip;q=0.5", "gzip"), ("*", "br"), ("gzip;q=0, br;q=0", None)):
            got = await client.get(path, headers={"accept-encoding": sent})
            assert got.headers.get("content-encoding") == coding, sent
            assert got.content == plain.content, sent
            if coding:
                assert int(got.headers["content-length"]) < len(plain.content) / 2, sent

    async def test_tiny_answers_go_as_they_are(self, client):
        got = await client.get("/healthz", headers={"accept-encoding": "br, gzip"})
        assert got.status_code == 200 and "content-encoding" not in got.headers
        assert int(got.headers["content-length"]) == len(got.content) < 1024

    async def test_an_answer_everyone_gets_is_compressed_once(self, app, client, session):
        for n in range(6):
            make_item(session, title=f"Item number {n} with a longer title to fill the page")
        await client.get("/changelog.atom")  # lifespan started, stack built
        layer = _middleware(app)
        before = layer.compressed
        bodies = {(await client.get("/api/v1/items", headers={"accept-encoding": "br"})).content for _ in range(3)}
        assert len(bodies) == 1 and layer.compressed == before + 1 and layer.reused >= 2
        sign_in(client, session, make_user(session))
        for _ in range(2):
            await client.get("/api/v1/items", headers={"accept-encoding": "br"})
        assert layer.compressed == before + 3  # a signed-in person's answer: compressed per answer, not kept


def test_accept_encoding_and_if_none_match_parsing():
    assert chosen_coding(None) is None and chosen_coding("") is None
    assert chosen_coding("gzip, br") == "br" and chosen_coding("deflate") is None
    assert chosen_coding("br;q=0.0, gzip") == "gzip" and chosen_coding("*;q=0") is None
    assert none_match('W/"a", "b"', 'W/"b"') and none_match("*", 'W/"x"') and not none_match('"a"', 'W/"b"')
    # q after other parameters still counts (a walk-through's "gzip;level=9;q=0" got gzip)
    assert chosen_coding("gzip;level=9;q=0") is None and chosen_coding("br;foo=1;q=0, gzip") == "gzip"
    # The client's preference first, ours between equals (a walk-through's "br;q=0.5, gzip;q=1" got brotli)
    assert chosen_coding("br;q=0.5, gzip;q=1") == "gzip" and chosen_coding("gzip;q=0.8, br;q=0.8") == "br"
    assert chosen_coding("*;q=0.5, gzip;q=0.9") == "gzip"


async def test_a_list_header_sent_on_several_lines_counts_as_one(client, session):
    """RFC 9110 §5.3: If-None-Match on two lines is one list (the tag on the second line was ignored)."""
    make_item(session, title="Dark mode")
    client.cookies.clear()
    etag = (await client.get("/changelog.atom")).headers["etag"]
    again = await client.get("/changelog.atom", headers=[("if-none-match", 'W/"other"'), ("if-none-match", etag)])
    assert again.status_code == 304


@pytest.mark.usefixtures("still_minute")  # a minute turning between the visits would make a miss
async def test_a_visitor_s_conditional_get_is_answered_from_the_kept_finished_page(app, client, session):
    make_item(session, title="Dark mode")
    client.cookies.clear()
    for _ in range(3):  # rendered and kept, then served finished
        first = await client.get("/")
    hits = app.state.pages.finished_hits
    assert hits > 0 and "set-cookie" not in first.headers
    again = await client.get("/", headers={"if-none-match": first.headers["etag"], "accept-encoding": "br"})
    assert again.status_code == 304 and app.state.pages.finished_hits == hits + 1
    zipped = await client.get("/", headers={"accept-encoding": "br"})
    assert zipped.headers["content-encoding"] == "br" and zipped.content == first.content


def test_an_etag_tells_apart_pieces_split_differently():
    assert weak_etag("ab", "c") != weak_etag("a", "bc") and weak_etag("ab", "c") == weak_etag("ab", "c")
