"""No input makes a 5xx: every form and JSON endpoint, and every GET with query parameters, driven by
hypothesis with NUL and other controls, lone surrogates, huge numbers and non-ASCII digits.

The endpoints are read from the app's routes: a route's declared Form, Query and JSON body fields,
plus the fields the app reads from forms by hand (`form.get("…")` and friends, found in its source).
Each runs signed in as the role it is for (staff pages as an admin, the rest as a customer), with a
CSRF token, an Origin and path parameters that name real rows, so the requests reach the handlers.
It matters most on PostgreSQL, which refuses NUL in text: run it there too.

AHEAD_FUZZ_EXAMPLES sets the examples per endpoint (3 by default, to keep the suite fast; e.g. 200
for a deeper run: `AHEAD_FUZZ_EXAMPLES=200 pytest tests/test_bad_input_property.py`).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from asgi_lifespan import LifespanManager
from fastapi import params
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.routing import Route

from app.accounts import service as accounts
from app.accounts.models import Role
from app.config import Settings
from app.db import Database
from app.deps import SESSION_COOKIE
from app.discussion.models import Comment
from app.forms import FormModel
from app.main import create_app
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance
from tests.discussion.helpers import comment
from tests.factories import make_admin, make_item, make_pm, make_product, make_tag, make_user, stage
from tests.feedback.helpers import make_idea, make_organisation, make_segment
from tests.helpers.http import CSRF_META

EXAMPLES = int(os.environ.get("AHEAD_FUZZ_EXAMPLES", "3"))
APP_DIR = Path(__file__).resolve().parent.parent / "app"

# The routes, read once from an app of this module (its database is never touched).
_routes_app = create_app(
    Settings(database_url="sqlite://", secret_key="fuzz-" + "x" * 40, base_url="http://testserver",
             redis_url="", _env_file=None),  # type: ignore[call-arg]
    Database("sqlite://"),  # never connected
)


def _form_model_fields() -> set[str]:
    """The fields of every form model (app/forms.py): routes read them with `read_form`, not as parameters."""
    names: set[str] = set()
    models = list(FormModel.__subclasses__())
    while models:
        model = models.pop()
        models.extend(model.__subclasses__())
        names.update(info.alias or name for name, info in model.model_fields.items())
    return names


def _hand_read_fields() -> list[str]:
    """Form fields the app reads by hand (form models included) rather than declaring them."""
    names: set[str] = _form_model_fields()
    for path in APP_DIR.rglob("*.py"):
        source = path.read_text()
        names.update(re.findall(r"""form(?:\.get|\.getlist)?[\[(]["']([a-z_]+)["']""", source))
        names.update(re.findall(r"""\btext\(["']([a-z_]+)["'], \d""", source))
    names.discard("csrf_token")
    return sorted(names)


HAND_READ = _hand_read_fields()


def _declared(route: APIRoute, where: str) -> list[str]:
    """The route's declared `query` or `form` fields, its dependencies' included."""
    names: set[str] = set()
    stack = [route.dependant]
    while stack:
        dependant = stack.pop()
        stack.extend(dependant.dependencies)
        if where == "query":
            names.update(f.alias for f in dependant.query_params)
        else:
            names.update(f.alias for f in dependant.body_params if isinstance(f.field_info, params.Form))
    return sorted(names - {"csrf_token"})


def _json_fields(route: APIRoute) -> list[str] | None:
    body = route.body_field
    if body is None or isinstance(body.field_info, params.Form):
        return None
    annotation = body.field_info.annotation
    return sorted(getattr(annotation, "model_fields", {}) or [body.alias])


# The query parameters of the plain GET routes the app puts ahead of its routers (app/roadmap/views.py's
# `direct_routes`): they read them by hand, so nothing declares them. A new plain GET route fails
# test_every_plain_get_route_is_listed until it is listed here.
PLAIN_ROUTE_QUERIES = {"/search": ["q"]}
NOT_DRIVEN = {"/openapi.json"}  # FastAPI's own


def _plain_get_routes() -> list[str]:
    return [route.path for route in _routes_app.routes
            if isinstance(route, Route) and not isinstance(route, APIRoute) and "GET" in (route.methods or ())
            and route.path not in NOT_DRIVEN]


def _queries(route: Route, template: str) -> list[str]:
    return _declared(route, "query") if isinstance(route, APIRoute) else PLAIN_ROUTE_QUERIES[template]


def _targets() -> Iterator[Any]:
    for path in _plain_get_routes():
        route = next(r for r in _routes_app.routes if getattr(r, "path", None) == path)
        yield pytest.param(route, "GET", path, id=f"GET {path}")
    for context in iter_route_contexts(_routes_app.routes):  # included routers' routes, with full paths
        route = context.original_route
        if not isinstance(route, APIRoute):
            continue
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            if method != "GET" or _declared(route, "query"):
                yield pytest.param(route, method, context.path, id=f"{method} {context.path}")


# --- what is sent ---------------------------------------------------------------------------------------

NASTY = [
    "\x00", "a\x00b", "\x00" * 3, "\x01\x02\x1b\x7f", "line\x0bbreak\x0c", "\ud800", "x\udfffy", "\ud83d",
    "²", "١٢٣", "٣", "⁹", "𝟗", "99999999999", "2147483648", "9" * 25, "-2147483649", "1e15", "1e400", "NaN",
    "-1", "0", "", " ", "9" * 400, "%00", "\\u0000", "😀", "é\u0301",
]


def _bad_text() -> st.SearchStrategy[str]:
    pieces = st.sampled_from(NASTY) | st.text(
        alphabet=st.characters(codec=None, exclude_categories=()), max_size=12)
    return st.lists(pieces, min_size=1, max_size=3).map("".join)


def _value(good: list[str]) -> st.SearchStrategy[str]:
    """Sometimes a value that names a real row (so the handler goes deeper), mostly a bad one."""
    return st.sampled_from(good) | _bad_text() | _bad_text()


def _form_bytes(pairs: list[tuple[str, str]]) -> bytes:
    # A lone surrogate goes out as its (invalid) UTF-8 bytes, as a broken client would send it.
    return urlencode(pairs, encoding="utf-8", errors="surrogatepass").encode("ascii")


def _json_value() -> st.SearchStrategy[Any]:
    numbers = st.sampled_from([10**20, -(10**20), 2**31, 2**63, 1e308, -1.5, 0])
    return _bad_text() | numbers | st.lists(_bad_text(), max_size=2) | st.dictionaries(_bad_text(), _bad_text(),
                                                                                          max_size=2)


# --- the world the requests act on ------------------------------------------------------------------------


def _world(session) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    admin, pm = make_admin(session), make_pm(session)
    segment = make_segment(session, "Fuzz tier")
    organisation = make_organisation(session, "Fuzz Inc", segment=segment)
    customer = make_user(session, organisation_id=organisation.id)
    product, tag = make_product(session), make_tag(session)
    item = make_item(session, product=product, tags=[tag])
    first: Comment = comment(session, item, customer, "A first comment")
    idea = make_idea(session, customer, product=product)
    vote = voting.cast_vote(session, item=make_item(session, product=product), user=customer,
                            importance=Importance.important, captured_by=pm, source=CaptureSource.call)
    invitation, invitation_token = accounts.invite_staff(session, email="new-pm@example.com", role=Role.pm,
                                                         invited_by=admin)
    magic_token = accounts.create_magic_link(session, email=customer.email)
    session.flush()
    ids = {
        "product_id": product.id, "stage_id": stage(session, "planned").id, "tag_id": tag.id,
        "organisation_id": organisation.id, "segment_id": segment.id, "feedback_id": idea.id,
        "vote_id": getattr(vote, "id", None) or 1, "invitation_id": invitation.id,
    }
    return {"admin": admin, "customer": customer, "pm": pm, "item": item, "comment": first,
            "ids": {k: str(v) for k, v in ids.items()}, "invitation_token": invitation_token,
            "magic_token": magic_token}


def _path(template: str, world: dict[str, Any]) -> str:
    def fill(match: re.Match[str]) -> str:
        name = match.group(1).split(":")[0]
        if name in world["ids"]:
            return world["ids"][name]
        if name == "user_id":
            return str((world["pm"] if "/staff/" in template else world["customer"]).id)
        if name in ("public_id", "id"):
            about_comments = template.startswith(("/comments", "/admin/moderation"))
            return world["comment"].public_id if about_comments else world["item"].public_id
        if name == "token":
            return world["invitation_token"] if "invitation" in template else world["magic_token"]
        if name == "slug":
            return world["item"].slug
        return "test"

    return re.sub(r"\{([^}]+)\}", fill, template)


def _good_values(world: dict[str, Any]) -> list[str]:
    return [*world["ids"].values(), world["item"].public_id, "important", "critical", "planned", "2027-Q1",
            "customers", "call", "ann@example.com"]


# --- the test ------------------------------------------------------------------------------------------


@contextmanager
def _client(app: Any) -> Iterator[tuple[BlockingPortal, httpx.AsyncClient]]:
    """An httpx client on the app, driven from this (synchronous) test through a portal: hypothesis
    drives synchronous functions, and the app's lifespan needs a running loop."""
    with start_blocking_portal() as portal:
        lifespan = portal.call(LifespanManager, app)  # made on the loop: it asks which loop it runs on
        with portal.wrap_async_context_manager(lifespan) as started:
            client = httpx.AsyncClient(transport=httpx.ASGITransport(app=started.app), base_url="http://testserver")
            try:
                yield portal, client
            finally:
                portal.call(client.aclose)


@pytest.mark.parametrize(("route", "method", "template"), list(_targets()))
def test_no_bad_input_makes_a_server_error(app, session, route: APIRoute, method: str, template: str) -> None:  # type: ignore[no-untyped-def]
    world = _world(session)
    staff = template.startswith("/admin")
    user = world["admin"] if staff else world["customer"]
    path = _path(template, world)
    queries = _queries(route, template)
    json_fields = _json_fields(route) if method != "GET" else None
    form_fields = sorted({*_declared(route, "form"), *HAND_READ}) if method != "GET" and json_fields is None \
        else []
    good = _good_values(world)
    fields = st.fixed_dictionaries({name: _value(good) for name in form_fields})
    query = st.fixed_dictionaries({}, optional={name: _value(good) for name in queries})
    body = st.fixed_dictionaries({}, optional={name: _json_value() for name in json_fields or []})

    with _client(app) as (portal, client):
        current: list[tuple[str, dict[str, str]]] = []

        def signed_in() -> tuple[str, dict[str, str]]:
            """The session and its CSRF token; a fresh pair after an example signed out, in or away."""
            if not current:
                client.cookies.set(SESSION_COOKIE, accounts.start_session(session, user=user))
                token = CSRF_META.search(portal.call(client.get, "/").text).group(1)  # type: ignore[union-attr]
                current.append((token, {"x-csrf-token": token, "origin": "http://testserver",
                                        "referer": "http://testserver/"}))
            return current[0]

        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
        @given(form=fields, query=query, body=body, multipart=st.booleans())
        def sends(form: dict[str, str], query: dict[str, str], body: dict[str, Any], multipart: bool) -> None:
            token, headers = signed_in()
            url = path + ("?" + urlencode(query, errors="surrogatepass") if query else "")
            kwargs: dict[str, Any] = {}
            if json_fields is not None:
                kwargs["content"] = json.dumps(body).encode()
                kwargs["headers"] = {**headers, "content-type": "application/json"}
            elif method != "GET" and multipart:
                kwargs["files"] = {k: (None, v.encode("utf-8", "surrogatepass")) for k, v in form.items()}
                kwargs["files"]["csrf_token"] = (None, token.encode())
                kwargs["headers"] = headers
            elif method != "GET":
                kwargs["content"] = _form_bytes([*form.items(), ("csrf_token", token)])
                kwargs["headers"] = {**headers, "content-type": "application/x-www-form-urlencoded"}
            response = portal.call(lambda: client.request(method, url, **kwargs))
            assert response.status_code < 500, (method, url, kwargs.get("content") or kwargs.get("files"),
                                                response.status_code, response.text[:300])
            if response.status_code in (401, 403) or "set-cookie" in response.headers:
                current.clear()

        sends()


def test_every_plain_get_route_is_listed():
    assert sorted(_plain_get_routes()) == sorted(PLAIN_ROUTE_QUERIES)


def test_every_form_and_json_endpoint_is_driven():
    """The discovery finds what it should: a new endpoint is covered without editing this file."""
    found = {p.id for p in _targets()}
    for expected in ("POST /items/{public_id}/comments", "POST /api/v1/items/{id}/vote", "POST /admin/items",
                     "POST /admin/settings", "POST /ideas", "GET /api/v1/items", "GET /search"):
        assert expected in found, expected
    assert len(found) > 60
    assert {"title", "product_id", "tags", "importance", "contact_email"} <= set(HAND_READ)
