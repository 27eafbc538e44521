"""Signed-in people's pages answered before the stack (app.pagecache.KeptPagesMiddleware), for every audience.

Once the app has answered someone of an audience (a segment's customers, the customers of organisations without
a segment, signed-in people without an organisation) at an address, the next signed-in request of that audience
there is answered by the middleware from the same kept page, filled in with the person's own parts. Each test
checks that what a person gets is theirs — their name, their CSRF token, their votes, their segment's items —
never the previous person's, and that the things that end or change a session show at the next request.
"""

from __future__ import annotations

import re
from datetime import timedelta
from types import SimpleNamespace

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app import deps, pagecache
from app.accounts import service as accounts
from app.accounts.models import Role, User, UserSession
from app.config import Settings
from app.db import utcnow
from app.main import create_app
from app.organisations import service as organisations
from app.organisations.models import Organisation
from app.roadmap.models import Visibility
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_user
from tests.feedback.helpers import customer_in_segment
from tests.helpers.databases import connected, own_database
from tests.helpers.http import CSRF_META, post_form
from tests.voting.helpers import widget_text

SESSION, CSRF = "ahead_session", "ahead_csrf"


class Person:
    """A browser of one signed-in person: their session cookie, and the CSRF cookie their first page set."""

    def __init__(self, session, user: User) -> None:  # type: ignore[no-untyped-def]
        self.user = user
        self.token = accounts.start_session(session, user=user)
        self.csrf: str | None = None

    async def get(self, client: httpx.AsyncClient, path: str = "/") -> httpx.Response:
        client.cookies.clear()
        client.cookies.set(SESSION, self.token)
        if self.csrf is not None:
            client.cookies.set(CSRF, self.csrf)
        response = await client.get(path)
        assert response.status_code == 200
        self.csrf = self.csrf or response.cookies.get(CSRF)
        return response

    def form_token(self, app) -> str:  # type: ignore[no-untyped-def]
        assert self.csrf is not None
        return str(app.state.csrf.form_token(self.csrf, self.token))


async def _kept(app, client: httpx.AsyncClient, person: Person, path: str = "/") -> httpx.Response:  # type: ignore[no-untyped-def]
    """The person's page as the middleware answers it (their first request, which sets the CSRF cookie, and the
    app's answer to their audience may come first)."""
    if person.csrf is None:
        await person.get(client, path)
    before = app.state.pages.signed_in_hits
    response = await person.get(client, path)
    if app.state.pages.signed_in_hits == before:  # the app answered and kept it for the audience: again
        response = await person.get(client, path)
    assert app.state.pages.signed_in_hits == before + 1
    return response


def _token_in(page: str) -> str:
    match = CSRF_META.search(page)
    assert match is not None
    return match.group(1)


async def test_the_kept_answer_is_the_apps_byte_for_byte(app, client, session):
    item = make_item(session, title="Shift swaps")
    customer, _ = customer_in_segment(session, "Enterprise")
    voting.cast_vote(session, item=item, user=customer, importance=Importance.critical)
    person = Person(session, customer)
    await person.get(client)  # sets the CSRF cookie
    served = app.state.pages.signed_in_hits
    by_app = await person.get(client)
    assert app.state.pages.signed_in_hits == served
    kept = await person.get(client)
    assert app.state.pages.signed_in_hits == served + 1
    assert kept.content == by_app.content
    for header in ("etag", "content-type", "content-security-policy", "cache-control", "x-frame-options"):
        assert kept.headers.get(header) == by_app.headers.get(header), header
    assert kept.headers["cache-control"] == "private, no-cache" and "set-cookie" not in kept.headers
    assert "You voted: Critical" in widget_text(kept.text, item.public_id)
    assert _token_in(kept.text) == person.form_token(app)
    # The ETag is the bytes': a 304 for them, and the same page answered again otherwise.
    client.cookies.set(SESSION, person.token)
    client.cookies.set(CSRF, person.csrf)
    assert (await client.get("/", headers={"if-none-match": kept.headers["etag"]})).status_code == 304


async def test_the_kept_page_is_answered_late_in_the_clocks_minute_too(app, client, session, monkeypatch):
    """A path's minute starts at a second of its own (app.pagecache._minute; "/" four seconds before the clock's):
    the page kept for the person's audience is still answered before the stack in those seconds."""
    start = 1_800_000_000  # the first second of a clock minute
    monkeypatch.setattr(pagecache, "time", SimpleNamespace(time=lambda: start + 58.5))
    make_item(session, title="Late in the minute")
    customer, _ = customer_in_segment(session, "Enterprise")
    assert "Late in the minute" in (await _kept(app, client, Person(session, customer))).text


async def test_each_audience_gets_only_its_own_people_and_items(app, client, session):
    """Two people per audience, one after the other on the same kept page: neither ever sees the other's name,
    token or votes, and nobody sees another segment's items."""
    public = make_item(session, title="Open to all")
    customers_only = make_item(session, title="Quokkavault", visibility=Visibility.customers)
    enterprise_a, enterprise = customer_in_segment(session, "Enterprise")
    startup_a, startup = customer_in_segment(session, "Startup")
    enterprise_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                segments=[enterprise])
    startup_item = make_item(session, title="Startup-only", visibility=Visibility.customers, segments=[startup])
    no_segment_a, _ = customer_in_segment(session)
    audiences = {
        "enterprise": [enterprise_a, make_user(session, password=None, organisation_id=enterprise_a.organisation_id)],
        "startup": [startup_a, make_user(session, password=None, organisation_id=startup_a.organisation_id)],
        "no segment": [no_segment_a, make_user(session, password=None, organisation_id=no_segment_a.organisation_id)],
        "no organisation": [make_user(session, password=None), make_user(session, password=None)],
    }
    sees = {"enterprise": {customers_only, enterprise_item}, "startup": {customers_only, startup_item},
            "no segment": {customers_only}, "no organisation": set()}
    for name, (first, second) in audiences.items():
        first.display_name, second.display_name = f"Firstperson {name}", f"Secondperson {name}"
        voting.cast_vote(session, item=public, user=first, importance=Importance.critical)
    session.flush()
    people = {name: [Person(session, user) for user in users] for name, users in audiences.items()}
    everyone = [person for pair in people.values() for person in pair]
    for person in everyone:
        await person.get(client)  # their CSRF cookies

    for _ in range(2):  # every page kept by then: each answer from the middleware, in turn across audiences
        for name, (first, second) in people.items():
            for person in (first, second):
                page = (await _kept(app, client, person)).text
                assert person.user.name in page and _token_in(page) == person.form_token(app)
                for someone in everyone:
                    if someone is not person:
                        assert someone.user.name not in page and someone.form_token(app) not in page
                widget = widget_text(page, public.public_id)
                assert ("You voted: Critical" in widget) is (person is first), (name, widget)
                for item in (customers_only, enterprise_item, startup_item):
                    assert (item.title in page) is (item in sees[name]), (name, item.title)


async def test_sign_out_and_revoked_sessions_end_at_the_next_request(app, client, session):
    customer, _ = customer_in_segment(session, "Enterprise")
    customer.display_name = "Signedin Person"
    secret = make_item(session, title="Quokkavault", visibility=Visibility.customers)
    leaving, revoked = Person(session, customer), Person(session, customer)
    for person in (leaving, revoked):
        assert "Signedin Person" in (await _kept(app, client, person)).text

    client.cookies.set(SESSION, leaving.token)
    client.cookies.set(CSRF, leaving.csrf)
    assert (await post_form(client, "/logout")).status_code == 303
    page = (await leaving.get(client)).text  # the old cookie, sent again
    assert "Signedin Person" not in page and secret.title not in page and "Sign in" in page

    assert "Signedin Person" in (await _kept(app, client, revoked)).text
    accounts.end_session(session, revoked.token)
    session.flush()
    page = (await revoked.get(client)).text
    assert "Signedin Person" not in page and secret.title not in page


async def test_a_new_organisation_segment_role_or_deactivation_applies_at_the_next_request(app, client, session):
    customer, enterprise = customer_in_segment(session, "Enterprise")
    startup_customer, startup = customer_in_segment(session, "Startup")
    enterprise_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                segments=[enterprise])
    startup_item = make_item(session, title="Startup-only", visibility=Visibility.customers, segments=[startup])
    draft = make_item(session, title="Draftish", published=False)
    person = Person(session, customer)
    assert enterprise_item.title in (await _kept(app, client, person)).text
    await _kept(app, client, Person(session, startup_customer))  # the Startup audience's page is kept too

    # moved to another organisation, in another segment
    startup_org = session.get(Organisation, startup_customer.organisation_id)
    admin = make_admin(session)
    assert organisations.move_person(session, user=customer, organisation=startup_org, actor=admin)
    page = (await person.get(client)).text
    assert startup_item.title in page and enterprise_item.title not in page

    # their organisation put in another segment
    startup_org.segment_id = enterprise.id
    session.flush()
    page = (await person.get(client)).text
    assert enterprise_item.title in page and startup_item.title not in page

    # a role given without ending the session (as a raw write would): staff are never answered from kept pages
    customer.role = Role.pm
    session.flush()
    served = app.state.pages.signed_in_hits
    assert draft.title in (await person.get(client)).text
    assert app.state.pages.signed_in_hits == served
    customer.role = Role.customer
    session.flush()
    assert draft.title not in (await person.get(client)).text

    # a role change through the service ends every session of the person
    accounts.set_user_role(session, user=customer, role=Role.pm, actor=admin)
    session.flush()
    page = (await person.get(client)).text
    assert draft.title not in page and customer.name not in page and "Sign in" in page

    # a deactivated account
    other = Person(session, startup_customer)
    assert startup_customer.name in (await _kept(app, client, other)).text
    startup_customer.is_active = False
    session.flush()
    page = (await other.get(client)).text
    assert startup_customer.name not in page and "Sign in" in page


async def test_a_flash_message_or_a_missing_csrf_cookie_goes_through_the_app(app, client, session):
    customer, _ = customer_in_segment(session)
    person = Person(session, customer)
    await _kept(app, client, person)
    served = app.state.pages.signed_in_hits
    client.cookies.clear()
    client.cookies.set(SESSION, person.token)  # no CSRF cookie: the app mints one
    response = await client.get("/")
    assert CSRF in response.cookies
    client.cookies.set(CSRF, person.csrf)
    client.cookies.set("ahead_flash", "something")
    assert (await client.get("/")).status_code == 200
    assert app.state.pages.signed_in_hits == served


# --- the session looked up once per commit: SQLite's data_version -------------------------------------------


async def test_on_a_sqlite_file_sessions_are_kept_until_a_commit_and_each_change_shows(tmp_path, monkeypatch):
    """The whole app on a database file of its own: a signed-in person's session is looked up once and kept while
    nothing is committed; a revoked session, a move to another segment, a new role and an expiry each show at the
    next request."""
    with own_database(tmp_path, "signed-in") as url:
        if not url.startswith("sqlite"):
            pytest.skip("SQLite's data_version; PostgreSQL reads the session per request")
        settings = Settings(database_url=url, secret_key="signed-in-" + "x" * 40, base_url="http://testserver",
                            redis_url="", _env_file=None)  # type: ignore[call-arg]
        with connected(url) as database:
            with database.transaction() as session:
                customer, enterprise = customer_in_segment(session, "Enterprise")
                other, startup = customer_in_segment(session, "Startup")
                enterprise_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                            segments=[enterprise])
                startup_item = make_item(session, title="Startup-only", visibility=Visibility.customers,
                                         segments=[startup])
                customer.display_name, other.display_name = "Kept Customer", "Other Customer"
                person, revoked = Person(session, customer), Person(session, other)
                customer_id, startup_org_id = customer.id, other.organisation_id
            app = create_app(settings, database)
            async with LifespanManager(app) as manager, httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=manager.app), base_url="http://testserver") as client:
                for someone in (person, revoked):
                    await _kept(app, client, someone)
                watcher = app.state.revision_reader
                reads = watcher.reads
                page = (await _kept(app, client, person)).text
                assert enterprise_item.title in page and "Kept Customer" in page
                assert watcher.reads == reads  # nothing committed: neither revisions nor session read again

                with database.transaction() as session:
                    accounts.end_session(session, revoked.token)
                assert "Other Customer" not in (await revoked.get(client)).text

                with database.transaction() as session:
                    session.get(User, customer_id).organisation_id = startup_org_id
                page = (await person.get(client)).text
                assert startup_item.title in page and enterprise_item.title not in page

                with database.transaction() as session:
                    session.get(User, customer_id).role = Role.pm
                served = app.state.pages.signed_in_hits
                assert "Kept Customer" in (await person.get(client)).text
                assert app.state.pages.signed_in_hits == served  # staff: the app's

                with database.transaction() as session:
                    session.get(User, customer_id).role = Role.customer
                    for row in session.query(UserSession).filter_by(user_id=customer_id):
                        row.expires_at = utcnow() + timedelta(seconds=1)
                assert "Kept Customer" in (await _kept(app, client, person)).text
                later = utcnow() + timedelta(seconds=5)
                monkeypatch.setattr(deps, "utcnow", lambda: later)  # the kept session's expiry
                monkeypatch.setattr(accounts, "utcnow", lambda: later)  # the app's own lookup
                page = (await person.get(client)).text  # expired since: nothing committed, still ended
                assert "Kept Customer" not in page and re.search(r">\s*Sign in\s*<", page)
