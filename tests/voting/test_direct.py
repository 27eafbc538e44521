"""The vote and the withdrawal run as plain routes ahead of the FastAPI router (app/voting/views.py,
`direct_routes`): they call the app's dependencies themselves. Everything a dependency refused before is refused
the same way now, for a browser's form and for static/app.js's fetch alike."""

from __future__ import annotations

import dataclasses

import pytest
from fastapi.routing import APIRoute
from sqlalchemy import func, select
from starlette.routing import Route

from app.deps import APP_DEPENDENCIES_CALLED
from app.portal import service as portal
from app.voting.models import Vote
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import csrf_token, sign_in

ACTIONS = ("vote", "unvote")
JSON = {"Accept": "application/json"}


def _votes(session) -> int:  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(Vote)) or 0


def test_the_direct_routes_call_every_dependency_the_app_has(app):
    # A new app-wide dependency must be called by the direct routes too (views._direct): this fails until it is.
    assert tuple(d.dependency.__name__ for d in app.router.dependencies) == APP_DEPENDENCIES_CALLED
    # The only plain routes that take a POST are these two (FastAPI's own /openapi.json is a GET).
    direct = [route.path for route in app.router.routes
              if isinstance(route, Route) and not isinstance(route, APIRoute) and "POST" in (route.methods or ())]
    assert direct == ["/items/{public_id}/vote", "/items/{public_id}/unvote"]


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("headers", [JSON, {}], ids=["fetch", "form"])
async def test_a_signed_in_post_without_the_csrf_token_changes_nothing(client, session, action, headers):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    response = await client.post(f"/items/{item.public_id}/{action}", data={"importance": "important"},
                                 headers=headers)
    assert response.status_code == 403
    assert _votes(session) == 0
    # A token that is not the one for this browser's cookie and session is no better.
    await csrf_token(client, "/")
    response = await client.post(f"/items/{item.public_id}/{action}", data={"importance": "important"},
                                 headers={**headers, "X-CSRF-Token": "0" * 64})
    assert response.status_code == 403
    assert _votes(session) == 0


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_post_from_another_site_is_refused_even_with_the_token(client, session, action):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    token = await csrf_token(client, "/")
    response = await client.post(f"/items/{item.public_id}/{action}", data={"importance": "important"},
                                 headers={**JSON, "X-CSRF-Token": token, "Origin": "https://evil.example"})
    assert response.status_code == 403
    assert response.json()["error"] == "cross_origin"
    assert _votes(session) == 0


async def test_the_token_in_the_form_counts_as_the_header_does(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session, password=None))
    token = await csrf_token(client, "/")
    response = await client.post(f"/items/{item.public_id}/vote", headers=JSON,
                                 data={"importance": "critical", "csrf_token": token, "widget": "card"})
    assert response.status_code == 200
    assert (response.json()["vote_count"], response.json()["my_vote"]) == (1, "critical")
    assert _votes(session) == 1


@pytest.mark.parametrize("action", ACTIONS)
async def test_a_path_with_a_bad_character_names_nothing(client, session, action):
    sign_in(client, session, make_user(session, password=None))
    token = await csrf_token(client, "/")
    response = await client.post(f"/items/ab%00cd/{action}", data={"importance": "important"},
                                 headers={**JSON, "X-CSRF-Token": token})
    assert response.status_code == 404


@pytest.mark.parametrize("action", ACTIONS)
async def test_in_private_mode_a_signed_out_post_is_sent_to_sign_in(client, session, action):
    item = make_item(session)
    access = portal.get_access_uncached(session)
    portal.update_access(session, actor=make_pm(session), access=dataclasses.replace(access, private_mode=True))
    token = await csrf_token(client, "/login")
    response = await client.post(f"/items/{item.public_id}/{action}", data={"importance": "important"},
                                 headers={**JSON, "X-CSRF-Token": token})
    assert response.status_code == 401
    assert "private" in response.json()["detail"]
    form = await client.post(f"/items/{item.public_id}/{action}", data={"importance": "important",
                                                                      "csrf_token": token})
    assert form.status_code == 303 and form.headers["location"].startswith("/login?next=")
    assert _votes(session) == 0


async def test_other_methods_are_not_allowed(client, session):
    item = make_item(session)
    response = await client.put(f"/items/{item.public_id}/vote", headers=JSON)
    assert response.status_code == 405
