"""How answers reach clients (app/responses.py): HEAD wherever GET is."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.routing import iter_route_contexts
from starlette.convertors import IntegerConvertor

from app.config import Settings
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
