"""The API keeps the promises of its own OpenAPI description (schemathesis, inside the suite).

The schema is loaded at collection time from an app of this module; an autouse fixture points that
app's database at the test's rolled-back transaction (the `app` fixture's), so every generated
request reads the rows made below and nothing survives the test. (`schemathesis.pytest.from_fixture`
would be the lazy way, but schemathesis 4.32 sets `node._nodeid`, which pytest 9 no longer has.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings

from app.config import Settings
from app.db import Database
from app.main import create_app
from app.roadmap.models import Timeframe, Visibility
from tests.factories import make_item, make_pm, make_product, make_tag, make_user

api = create_app(
    Settings(database_url="sqlite://", secret_key="openapi-test-" + "x" * 32, base_url="http://testserver",
             redis_url="", _env_file=None),  # type: ignore[call-arg]
    Database("sqlite://"),  # never connected: replaced per test below; /openapi.json needs no database
)
schema = schemathesis.openapi.from_asgi("/openapi.json", api)


@pytest.fixture(autouse=True)
def rolled_back_data(app, session):  # type: ignore[no-untyped-def]
    """Requests join the test's transaction; a few items of every kind give the responses content."""
    api.state.database = app.state.database
    product = make_product(session, name="Reports", slug="reports")
    tag = make_tag(session, "Exports")
    return [
        make_item(session, product=product, tags=[tag], title="Scheduled exports"),
        make_item(session, product=product, stage_slug="released", title="Dark mode",
                  release_notes="**Shipped** for everyone.", timeframe=Timeframe.quarter, target_year=2027,
                  target_quarter=1),
        make_item(session, product=product, title="Draft only", published=False),
        make_item(session, product=product, title="Staff only", visibility=Visibility.internal),
    ]


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_api_conforms_to_its_schema(case):  # type: ignore[no-untyped-def]
    case.call_and_validate()


def test_real_items_match_the_schema(rolled_back_data, session):  # type: ignore[no-untyped-def]
    """Generated ids almost never hit a real item: check real ones, for a visitor and for staff
    (who also see drafts, whose `published_at` is null)."""
    operation = schema["/api/v1/items/{id}"]["GET"]
    public, released, draft, internal = rolled_back_data
    for item in (public, released):
        assert operation.Case(path_parameters={"id": item.public_id}).call_and_validate().status_code == 200
    for item in (draft, internal):
        assert operation.Case(path_parameters={"id": item.public_id}).call_and_validate().status_code == 404

    from app.accounts import service as accounts
    from app.deps import SESSION_COOKIE

    cookies = {SESSION_COOKIE: accounts.start_session(session, user=make_pm(session))}
    response = operation.Case(path_parameters={"id": draft.public_id}, cookies=cookies).call_and_validate()
    assert response.status_code == 200 and response.json()["published_at"] is None
    listing = schema["/api/v1/items"]["GET"].Case(query={"per_page": 100}, cookies=cookies).call_and_validate()
    assert listing.json()["total"] == 4


def test_a_real_vote_flow_matches_the_schema(rolled_back_data, session):  # type: ignore[no-untyped-def]
    """Generated requests carry no session or CSRF token (401/403): walk a signed-in customer's votes,
    every answer checked against the description, errors included."""
    from app.accounts import service as accounts
    from app.deps import SESSION_COOKIE
    from app.security import CSRF_COOKIE

    public, released, draft, _ = rolled_back_data
    csrf_cookie = api.state.csrf.new_cookie_value()
    cookies = {SESSION_COOKIE: accounts.start_session(session, user=make_user(session, password=None)),
               CSRF_COOKIE: csrf_cookie}
    headers = {"X-CSRF-Token": api.state.csrf.form_token(csrf_cookie, cookies[SESSION_COOKIE])}
    vote = schema["/api/v1/items/{id}/vote"]["POST"]
    withdraw = schema["/api/v1/items/{id}/vote"]["DELETE"]

    def call(operation, item, **kwargs):  # type: ignore[no-untyped-def]
        return operation.Case(path_parameters={"id": item.public_id}, cookies=cookies, headers=headers,
                              **kwargs).call_and_validate()

    assert call(vote, public, body={"importance": "critical", "reason": "Month-end"}).json()["my_vote"] == "critical"
    mine = schema["/api/v1/me/votes"]["GET"].Case(cookies=cookies).call_and_validate().json()
    assert [v["item"]["id"] for v in mine["votes"]] == [public.public_id]
    assert call(withdraw, public).json() == {"item": public.public_id, "my_vote": None, "vote_count": 0}
    assert call(vote, released, body={"importance": "important"}).status_code == 409
    assert call(vote, draft, body={"importance": "important"}).status_code == 404
    assert call(vote, public, body={"importance": "whenever"}).status_code == 422


def test_a_real_discussion_matches_the_schema(rolled_back_data, session):  # type: ignore[no-untyped-def]
    """Comments with a reply, a deleted thread start kept by its reply and a pinned answer, page by page."""
    from app.accounts.viewer import Viewer
    from app.discussion import service as discussion

    public, _, draft, _ = rolled_back_data
    ann, pm = make_user(session, password=None), make_pm(session, password=None)
    first = discussion.create_comment(session, viewer=Viewer(user=ann), item=public, body="**Yes** please")
    discussion.create_comment(session, viewer=Viewer(user=pm), item=public, body="Noted", parent_public_id=first.public_id)
    discussion.delete_comment(session, viewer=Viewer(user=ann), comment=first)
    for n in range(3):
        discussion.create_comment(session, viewer=Viewer(user=ann), item=public, body=f"Comment {n}")
    answer = discussion.create_comment(session, viewer=Viewer(user=pm), item=public, body="It is planned")
    discussion.pin_comment(session, actor=pm, comment=answer)
    operation = schema["/api/v1/items/{id}/comments"]["GET"]

    def call(item, **query):  # type: ignore[no-untyped-def]
        return operation.Case(path_parameters={"id": item.public_id}, query=query).call_and_validate()

    page = call(public, per_page=2).json()
    assert page["pinned"]["id"] == answer.public_id and page["comments"][0]["deleted"]
    rest = call(public, per_page=2, after=page["next_cursor"]).json()
    assert len(page["comments"]) == len(rest["comments"]) == 2 and rest["next_cursor"] is None
    assert call(public, after="nosuchcomment").status_code == 422
    assert call(draft).status_code == 404
