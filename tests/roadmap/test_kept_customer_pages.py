"""Signed-in people's pages answered before the stack (app.pagecache.KeptPagesMiddleware), for every audience.

Once the app has answered someone of an audience (a segment's customers, the customers of organisations without
a segment, signed-in people without an organisation) at an address, the next signed-in request of that audience
there is answered by the middleware from the same kept page, filled in with the person's own parts. Each test
checks that what a person gets is theirs — their name, their CSRF token, their votes, their segment's items —
never the previous person's, and that the things that end or change a session show at the next request.
"""

from __future__ import annotations

import asyncio
import re
import threading
from datetime import timedelta
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from sqlalchemy import event

from app import deps, pagecache, revision
from app.accounts import service as accounts
from app.accounts.models import Role, User, UserSession
from app.db import Database, utcnow
from app.organisations import service as organisations
from app.organisations.models import Organisation
from app.responses import ResponseMiddleware
from app.roadmap.models import Visibility
from app.security import unmasked
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_admin, make_item, make_user
from tests.feedback.helpers import customer_in_segment
from tests.helpers.csrf import page_token, unmasked_tokens
from tests.helpers.databases import connected, own_database
from tests.helpers.http import post_form
from tests.helpers.people import CSRF, SESSION, Person, own_app
from tests.voting.helpers import widget_text

# Counts of the cache's hits: a minute turning between two visits would add a miss (a fresh-check's PostgreSQL run,
# on a loaded machine, once saw `_kept` find no hit after its retry).
pytestmark = pytest.mark.usefixtures("still_minute")


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


def _response_layer(app) -> ResponseMiddleware:  # type: ignore[no-untyped-def]
    layer = app.middleware_stack
    while not isinstance(layer, ResponseMiddleware):
        layer = layer.app
    return layer


def _token_in(page: str) -> str:
    """The page's CSRF token, unmasked."""
    carried = page_token(page)
    token = unmasked(carried)
    assert token is not None and token != carried  # masked
    return token


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
    assert unmasked_tokens(kept.text) == unmasked_tokens(by_app.text)
    assert kept.content != by_app.content  # each answer its own mask of the token
    for header in ("etag", "content-type", "content-security-policy", "cache-control", "x-frame-options"):
        assert kept.headers.get(header) == by_app.headers.get(header), header
    assert kept.headers["cache-control"] == "private, no-cache" and "set-cookie" not in kept.headers
    assert "You voted: Critical" in widget_text(kept.text, item.public_id)
    assert _token_in(kept.text) == person.form_token(app)
    # The ETag is the bytes': a 304 for them, and the same page answered again otherwise.
    client.cookies.set(SESSION, person.token)
    client.cookies.set(CSRF, person.csrf)
    assert (await client.get("/", headers={"if-none-match": kept.headers["etag"]})).status_code == 304


async def test_a_persons_page_is_put_together_once_and_each_browser_gets_its_own_token(app, client, session):
    """How a kept page goes together for one person is kept (pagecache._assemble): their second browser gets the
    same page with its own session's token and ETag, never the first browser's; their vote makes it anew."""
    item = make_item(session, title="Rota export")
    customer, _ = customer_in_segment(session, "Enterprise")
    laptop, phone = Person(session, customer), Person(session, customer)  # two sessions of one person
    first = await _kept(app, client, laptop)
    (_, page), = app.state.pages.entries()
    assembly = page._assembled[customer.id]
    second = await _kept(app, client, phone)
    assert page._assembled[customer.id] is assembly  # put together once for the person
    laptop_token, phone_token = _token_in(first.text), _token_in(second.text)
    assert (laptop_token, phone_token) == (laptop.form_token(app), phone.form_token(app))
    first_page, second_page = unmasked_tokens(first.text), unmasked_tokens(second.text)
    assert laptop_token != phone_token and laptop_token not in second_page and phone_token not in first_page
    assert first_page.replace(laptop_token, "T") == second_page.replace(phone_token, "T")
    assert first.headers["etag"] != second.headers["etag"]
    assert "You voted" not in widget_text(second.text, item.public_id)

    voting.cast_vote(session, item=item, user=customer, importance=Importance.critical)
    session.flush()
    again = await _kept(app, client, laptop)
    assert "You voted: Critical" in widget_text(again.text, item.public_id)
    assert _token_in(again.text) == laptop_token and again.headers["etag"] != first.headers["etag"]
    assert page._assembled[customer.id] is not assembly


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
                answer = (await _kept(app, client, person)).text
                page = unmasked_tokens(answer)
                assert person.user.name in page and _token_in(answer) == person.form_token(app)
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


async def test_a_session_cookie_that_names_nobody_gets_the_visitors_kept_page(app, client, session):
    """A browser still sending the cookie of a session that ended (signed out in another tab, revoked), or a made-up
    one, is a visitor: answered the visitors' finished page before the stack, the bytes and headers the app answers
    such a request, marked private (it named a session); nothing of the person's. A live session never is."""
    customer, _ = customer_in_segment(session, "Enterprise")
    customer.display_name = "Signedin Person"
    secret = make_item(session, title="Quokkavault", visibility=Visibility.customers)
    make_item(session, title="Open roadmap item")
    person = Person(session, customer)
    assert "Signedin Person" in (await _kept(app, client, person)).text
    accounts.end_session(session, person.token)
    session.flush()
    pages = app.state.pages

    by_app = await person.get(client)  # nothing kept finished yet: the app answers the ended session's cookie
    assert "Signedin Person" not in by_app.text and secret.title not in by_app.text
    client.cookies.clear()
    for _ in range(2):  # a visitor's first request keeps the answer finished
        visitor = await client.get("/")
    finished = pages.finished_hits
    for cookies in ({SESSION: person.token, CSRF: person.csrf}, {SESSION: person.token}, {SESSION: "made-up"},
                    {SESSION: person.token, CSRF: person.csrf, "_ga": "GA1.1.1.2"}):
        client.cookies.clear()
        for name, value in cookies.items():
            client.cookies.set(name, value)  # type: ignore[arg-type]  # the CSRF cookie set by the first page
        response = await client.get("/")
        finished += 1
        assert pages.finished_hits == finished, cookies  # before the stack
        assert response.status_code == 200 and response.content == visitor.content == by_app.content
        for header in ("etag", "content-type", "content-security-policy", "x-frame-options"):
            assert response.headers.get(header) == by_app.headers.get(header), header
        assert response.headers["cache-control"] == "private, no-cache" == by_app.headers["cache-control"]
        assert "set-cookie" not in response.headers

    # compressed once for every visitor and every such cookie (the same bytes), not per answer
    layer = _response_layer(app)
    compressed = layer.compressed
    answers = []
    for cookie in ("ahead_session=made-up", "ahead_session=made-up", None):
        client.cookies.clear()
        answers.append(await client.get("/", headers={"accept-encoding": "br", **({"cookie": cookie} if cookie else {})}))
    assert all(a.headers["content-encoding"] == "br" and a.content == visitor.content for a in answers)
    assert len({a.headers["content-length"] for a in answers}) == 1 and layer.compressed <= compressed + 1
    assert [a.headers["cache-control"] for a in answers] == ["private, no-cache"] * 2 + ["no-cache"]
    finished += 3
    assert pages.finished_hits == finished

    # with a flash message the app answers (it shows it once, then clears it)
    client.cookies.set("ahead_flash", "something")
    assert (await client.get("/")).status_code == 200
    assert pages.finished_hits == finished

    # a live session is never answered the visitors' page, with or without its CSRF cookie
    other = Person(session, customer)
    other_page = await _kept(app, client, other)
    assert "Signedin Person" in other_page.text and secret.title in other_page.text
    client.cookies.clear()
    client.cookies.set(SESSION, other.token)
    response = await client.get("/")
    assert "Signedin Person" in response.text and secret.title in response.text
    assert CSRF in response.cookies  # the app's answer, which mints the cookie
    assert pages.finished_hits == finished


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


async def test_made_up_parameters_do_not_each_keep_an_address_of_a_customers_page(app, client, session):
    customer, _ = customer_in_segment(session)
    person = Person(session, customer)
    alone = await _kept(app, client, person)
    for n in range(3 * pagecache.MAX_OTHER_ADDRESSES):
        assert customer.name in (await person.get(client, f"/?x={n}")).text
    assert len(app.state.pages._signed_in) <= 1 + pagecache.MAX_OTHER_ADDRESSES
    assert unmasked_tokens((await _kept(app, client, person)).text) == unmasked_tokens(alone.text)


async def test_cookies_the_app_never_reads_beside_the_session_still_get_the_kept_page(app, client, session):
    """An analytics or consent cookie beside a customer's session: their own page from the kept one, as without it."""
    customer, _ = customer_in_segment(session)
    person = Person(session, customer)
    alone = await _kept(app, client, person)
    served = app.state.pages.signed_in_hits
    client.cookies.clear()
    for name, value in ((SESSION, person.token), (CSRF, person.csrf), ("_ga", "GA1.1.123.456"),
                        ("cookieconsent_status", "dismiss")):
        client.cookies.set(name, value)
    response = await client.get("/")
    assert app.state.pages.signed_in_hits == served + 1
    assert unmasked_tokens(response.text) == unmasked_tokens(alone.text)
    assert customer.name in response.text and "private" in response.headers["cache-control"]


# --- the whole app on a database of its own: the session kept per worker -------------------------------------


class Statements:
    """The statements run on the app's own pool (the revision readers' connections are apart from it)."""

    def __init__(self, database: Database) -> None:
        self.count = 0
        event.listen(database.engine, "before_cursor_execute", self._counted)

    def _counted(self, *_args: Any) -> None:
        self.count += 1


async def test_on_the_apps_own_database_sessions_are_kept_and_each_change_shows_at_the_next_request(
        tmp_path, monkeypatch):
    """The whole app on a database of its own (SQLite file or PostgreSQL, no test transaction): a signed-in person's
    session is looked up once and kept (SQLite: until a commit; PostgreSQL: until the content or sessions revision
    moves), so a kept page is answered without a statement on the app's pool; a sign-out on this worker, a revoked
    session, "sign out everywhere", a move to another organisation or segment, a new role, a deactivation, a
    shorter expiry and an expiry that passes each show at the next request."""
    with own_database(tmp_path, "signed-in") as url, connected(url) as database:
        with database.transaction() as session:
            customer, enterprise = customer_in_segment(session, "Enterprise")
            other, startup = customer_in_segment(session, "Startup")
            enterprise_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                        segments=[enterprise])
            startup_item = make_item(session, title="Startup-only", visibility=Visibility.customers,
                                     segments=[startup])
            customer.display_name, other.display_name = "Kept Customer", "Other Customer"
            person, revoked, leaving = Person(session, customer), Person(session, other), Person(session, other)
            phone, laptop = Person(session, customer), Person(session, customer)
            customer_id, other_id = customer.id, other.id
            enterprise_org_id, startup_org_id, startup_id = customer.organisation_id, other.organisation_id, startup.id
        async with own_app(database, url) as (app, client):
            watcher = app.state.revision_reader
            assert isinstance(watcher, revision.SqliteWatcher | revision.PostgresWatcher)
            statements = Statements(database)
            for someone in (person, revoked, leaving, phone, laptop):
                await _kept(app, client, someone)
            before, reads = statements.count, watcher.reads
            page = (await _kept(app, client, person)).text
            assert enterprise_item.title in page and "Kept Customer" in page
            assert statements.count == before  # neither the revisions nor the session read on the app's pool
            if isinstance(watcher, revision.SqliteWatcher):
                assert watcher.reads == reads  # nothing committed: nothing read again

            # signing out on this worker, the cookie sent again
            client.cookies.set(SESSION, leaving.token)
            client.cookies.set(CSRF, leaving.csrf)  # type: ignore[arg-type]  # set by its first page
            assert (await post_form(client, "/logout")).status_code == 303
            assert "Other Customer" not in (await leaving.get(client)).text
            assert "Other Customer" in (await _kept(app, client, revoked)).text  # their other session is on
            # the ended session's cookie, sent again, gets the visitors' page kept finished, before the stack
            client.cookies.clear()
            for _ in range(2):
                visitor = (await client.get("/")).content
            finished = app.state.pages.finished_hits
            dead = await leaving.get(client)
            assert app.state.pages.finished_hits == finished + 1 and dead.content == visitor
            assert dead.headers["cache-control"] == "private, no-cache"

            # a session revoked in another transaction (another worker, the admin area)
            with database.transaction() as session:
                accounts.end_session(session, revoked.token)
            assert "Other Customer" not in (await revoked.get(client)).text

            # "sign out everywhere": a new password ends every session of the person, and changes nothing shown
            with database.transaction() as session:
                content = revision.current(session)
                accounts.set_password(session, user=session.get(User, customer_id), password_hash="x")
            with database.new_session(write=False) as session:
                assert revision.current(session) == content  # so the sessions revision alone said it
            for someone in (phone, laptop):
                page = (await someone.get(client)).text
                assert "Kept Customer" not in page and re.search(r">\s*Sign in\s*<", page)

            with database.transaction() as session:
                person.token = accounts.start_session(session, user=session.get(User, customer_id))
            assert "Kept Customer" in (await _kept(app, client, person)).text

            # moved to another organisation, in another segment; then their organisation to another segment
            with database.transaction() as session:
                session.get(User, customer_id).organisation_id = startup_org_id
            page = (await person.get(client)).text
            assert startup_item.title in page and enterprise_item.title not in page
            with database.transaction() as session:
                session.get(User, customer_id).organisation_id = enterprise_org_id
                session.get(Organisation, enterprise_org_id).segment_id = startup_id
            page = (await person.get(client)).text
            assert startup_item.title in page and enterprise_item.title not in page

            # a new role (staff are never answered from kept pages), and back
            with database.transaction() as session:
                session.get(User, customer_id).role = Role.pm
            served = app.state.pages.signed_in_hits
            assert "Kept Customer" in (await person.get(client)).text
            assert app.state.pages.signed_in_hits == served  # staff: the app's
            with database.transaction() as session:
                session.get(User, customer_id).role = Role.customer

            # a shorter expiry, then the moment it passes (nothing committed by then)
            with database.transaction() as session:
                for row in session.query(UserSession).filter_by(user_id=customer_id):
                    row.expires_at = utcnow() + timedelta(seconds=1)
            assert "Kept Customer" in (await _kept(app, client, person)).text
            later = utcnow() + timedelta(seconds=5)
            with monkeypatch.context() as clock:
                clock.setattr(deps, "utcnow", lambda: later)  # the kept session's expiry
                clock.setattr(accounts, "utcnow", lambda: later)  # the app's own lookup
                page = (await person.get(client)).text
                assert "Kept Customer" not in page and re.search(r">\s*Sign in\s*<", page)

            # a deactivated account
            with database.transaction() as session:
                other_person = Person(session, session.get(User, other_id))
            assert "Other Customer" in (await _kept(app, client, other_person)).text
            with database.transaction() as session:
                session.get(User, other_id).is_active = False
            page = (await other_person.get(client)).text
            assert "Other Customer" not in page and re.search(r">\s*Sign in\s*<", page)


async def test_on_postgresql_signed_in_people_share_the_workers_revision_read(tmp_path, monkeypatch):
    """PostgreSQL: concurrent signed-in requests share the worker's single-flight read and none opens a session of
    its own; a revision read that fails sends the request through the app (which answers it, signed in)."""
    with own_database(tmp_path, "signed-in-pg") as url, connected(url) as database:
        if not url.startswith("postgresql"):
            pytest.skip("PostgreSQL's single-flight read; SQLite's data_version is tested above")
        with database.transaction() as session:
            customer, _ = customer_in_segment(session, "Enterprise")
            customer.display_name = "Kept Customer"
            person = Person(session, customer)
        async with own_app(database, url) as (app, client):
            watcher = app.state.revision_reader
            assert isinstance(watcher, revision.PostgresWatcher)
            statements = Statements(database)
            kept = await _kept(app, client, person)
            before, reads, hits = statements.count, watcher.reads, app.state.pages.signed_in_hits
            client.cookies.clear()
            client.cookies.set(SESSION, person.token)
            client.cookies.set(CSRF, person.csrf)  # type: ignore[arg-type]  # set by its first page
            together = await asyncio.gather(*(client.get("/") for _ in range(20)))
            assert [unmasked_tokens(r.text) for r in together] == [unmasked_tokens(kept.text)] * 20
            assert app.state.pages.signed_in_hits == hits + 20
            assert watcher.reads - reads <= 3  # one read in flight, the rest queued behind it: not 20
            assert statements.count == before  # the viewer kept: no session per request

            async def failing() -> revision.Watched:
                raise ConnectionError("server closed the connection")

            monkeypatch.setattr(watcher, "_fetch", failing)
            hits = app.state.pages.signed_in_hits
            page = (await person.get(client)).text
            assert "Kept Customer" in page and app.state.pages.signed_in_hits == hits  # the app answered
            monkeypatch.undo()
            assert "Kept Customer" in (await _kept(app, client, person)).text


async def test_a_row_read_while_another_request_saw_newer_revisions_is_not_kept(monkeypatch):
    """The exactness rule for kept viewers (app/deps.py SignedInViewers.read_after): a row is used again only by
    requests whose revision read answered the revisions it was read after. Request A's row read is slow; meanwhile
    B's read answers a moved sessions revision (a sign-out, a new expiry) and B reads the row anew. A's row, read
    before, serves A but is not kept: C, under B's revisions, gets B's row without a read of its own."""
    later = utcnow() + timedelta(days=1)
    rows = {"A": ("sid", 1, later, "Before", "a@example.com", Role.customer, True, None, None),
            "B": ("sid", 1, later, "After", "a@example.com", Role.customer, True, None, None)}
    answers = iter([(1, 0, 10), (1, 0, 11), (1, 0, 11)])  # (content, votes, sessions) of three reads, in turn
    reading: list[str] = []
    slow = threading.Event()

    async def read() -> revision.Watched:
        return next(answers)

    def columns(_database: Any, _token: str) -> tuple[Any, ...]:  # in a worker thread, as the app's
        who = "A" if not reading else "B"
        reading.append(who)
        if who == "A":
            slow.wait(5)
        return rows[who]

    monkeypatch.setattr(deps, "_session_columns", columns)
    viewers = deps.SignedInViewers()
    watcher = revision.SingleFlight(read)
    first = asyncio.ensure_future(viewers.read_after(watcher, None, "cookie"))  # type: ignore[arg-type]  # any reader of three
    for _ in range(1000):
        if reading:
            break
        await asyncio.sleep(0.001)
    _, _, b = await viewers.read_after(watcher, None, "cookie")  # type: ignore[arg-type]  # as above
    slow.set()
    _, _, a = await first
    assert a is not None and a.user is not None and a.user.display_name == "Before"
    assert b is not None and b.user is not None and b.user.display_name == "After"
    _, _, c = await viewers.read_after(watcher, None, "cookie")  # type: ignore[arg-type]  # as above
    assert c is b and reading == ["A", "B"]
