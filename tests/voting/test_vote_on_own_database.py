"""The vote and the withdrawal on the app's own database (a SQLite file or PostgreSQL, no test transaction).

The vote's route keeps who a session cookie stands for per worker, under the revisions its transaction reads for
its settings anyway (app/deps.py SignedInViewers.in_transaction), instead of looking the session up in every vote's
transaction. These tests check that every change that ends or narrows a session counts at the next vote as it did
before, that the person the vote is recorded for is the one the cookie stands for, that what the vote writes beyond
the vote row (the reason, the webhook's payload) names them, and that a vote's transaction has no statement for the
session once it is kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, event, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError

from app import deps, revision
from app.accounts import service as accounts
from app.accounts.models import User, UserSession
from app.accounts.viewer import Viewer
from app.db import Database, DriverTransaction, utcnow
from app.feedback.models import Feedback
from app.organisations.models import Organisation
from app.outbox.models import OutboxJob
from app.portal import service as portal
from app.roadmap.models import Item, Visibility
from app.voting import service as voting
from app.voting.models import Follow, Importance, Vote
from app.webhooks import service as webhooks
from tests.factories import make_admin, make_item
from tests.feedback.helpers import customer_in_segment
from tests.helpers.databases import connected, own_database, server_url
from tests.helpers.people import CSRF, SESSION, Person, own_app


class Statements:
    """The SQL run on the app's pool through SQLAlchemy (the revision reader's connection is apart from it), and
    through the driver alone (`driven`: PostgreSQL's vote at once, app.db.DriverTransaction)."""

    def __init__(self, database: Database, monkeypatch: pytest.MonkeyPatch | None = None) -> None:
        self.seen: list[str] = []
        self.driven: list[str] = []
        event.listen(database.engine, "before_cursor_execute", self._seen)
        if monkeypatch is not None:
            run = DriverTransaction.run

            def recorded(transaction: DriverTransaction, sql: str, params: dict[str, Any]) -> Any:
                self.driven.append(" ".join(sql.split()))
                return run(transaction, sql, params)

            monkeypatch.setattr(DriverTransaction, "run", recorded)

    def _seen(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.seen.append(" ".join(statement.split()))

    def since(self, mark: int) -> list[str]:
        return self.seen[mark:]


@contextlib.contextmanager
def _with_a_holder(url: str, *, lock_timeout: float) -> Iterator[tuple[Database, Any]]:
    """The app's database with this lock timeout, and an engine of its own to hold rows locked with."""
    database = Database(url, lock_timeout=lock_timeout)
    revision.track(database)
    holder = create_engine(make_url(url))
    try:
        yield database, holder
    finally:
        holder.dispose()
        database.dispose()


async def _vote(app: Any, client: httpx.AsyncClient, person: Person, item: Item | str, *, unvote: bool = False,
                importance: str = "critical", widget: str = "card", reason: str | None = None) -> httpx.Response:
    """What static/app.js posts for the person: their cookies, the CSRF token of their page, JSON back."""
    public_id = item if isinstance(item, str) else item.public_id
    client.cookies.clear()
    client.cookies.set(SESSION, person.token)
    client.cookies.set(CSRF, person.csrf)  # type: ignore[arg-type]  # set by their first page
    data = {"widget": widget, "next": "/"}
    if not unvote:
        data["importance"] = importance
    if reason is not None:
        data["reason"] = reason
    return await client.post(f"/items/{public_id}/{'unvote' if unvote else 'vote'}", data=data,
                             headers={"X-CSRF-Token": person.form_token(app), "Accept": "application/json"})


def _votes(database: Database, item_id: int) -> tuple[int, int]:
    """(vote rows, the item's counter) as a new transaction sees them."""
    with database.new_session(write=False) as session:
        rows = session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item_id)) or 0
        return rows, session.scalar(select(Item.vote_count).where(Item.id == item_id)) or 0


async def test_votes_on_the_apps_own_database_count_for_the_cookies_person_and_every_ended_session_is_refused(
        tmp_path, monkeypatch):
    with own_database(tmp_path, "vote-kept") as url, connected(url) as database:
        with database.transaction() as session:
            customer, enterprise = customer_in_segment(session, "Enterprise")
            other, _ = customer_in_segment(session, "Startup")
            customer.display_name = "Kept Voter"
            public = make_item(session, title="Open to all")
            segment_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                     segments=[enterprise])
            person, leaving, revoked = Person(session, customer), Person(session, other), Person(session, other)
            ids = {"customer": customer.id, "other": other.id, "public": public.id, "segment": segment_item.id,
                   "org": customer.organisation_id}
            public_id, segment_public_id = public.public_id, segment_item.public_id
        async with own_app(database, url) as (app, client):
            statements = Statements(database, monkeypatch)
            for someone in (person, leaving, revoked):
                await someone.get(client)  # their CSRF cookies

            # A vote, then a second one: the second's transaction reads the revisions once and not the session (the
            # first read it, the worker keeping it from then on).
            response = await _vote(app, client, person, segment_public_id)
            assert response.status_code == 200 and response.json()["my_vote"] == "critical"
            mark, driven = len(statements.seen), len(statements.driven)
            response = await _vote(app, client, person, public_id, importance="important")
            assert response.status_code == 200
            assert response.json()["my_vote"] == "important" and response.json()["vote_count"] == 1
            ran = statements.since(mark)
            assert not [s for s in ran if "user_sessions" in s], ran
            kept_people = [viewer.user for _, viewer in app.state.vote_viewers._kept.values()]
            assert [user.id for user in kept_people] == [ids["customer"]]
            assert inspect(kept_people[0]).session_id is None  # shared by the worker's votes: never any one's
            if database.engine.dialect.name == "postgresql":
                # the vote at once: the revisions guessed, and checked by the vote's one statement, which runs
                # through the driver alone: nothing on the session's connection
                assert ran == [], ran
                assert [s[:16] for s in statements.driven[driven:]] == ["WITH guessed AS "], statements.driven
            else:
                assert len([s for s in ran if s.startswith("SELECT coalesce(sum(")]) == 1, ran
            with database.new_session(write=False) as session:
                voters = set(session.scalars(select(Vote.user_id).where(Vote.item_id.in_([ids["public"],
                                                                                       ids["segment"]]))))
                assert voters == {ids["customer"]}  # the cookie's person, and only them
                assert session.scalar(select(func.count()).select_from(Follow).where(
                    Follow.user_id == ids["customer"])) == 2  # a vote follows the item
            assert _votes(database, ids["public"]) == (1, 1)
            response = await _vote(app, client, person, public_id, unvote=True)
            assert response.status_code == 200 and response.json()["my_vote"] is None
            assert _votes(database, ids["public"]) == (0, 0)

            # signed out on this worker: the old cookie votes no more
            client.cookies.set(SESSION, leaving.token)
            client.cookies.set(CSRF, leaving.csrf)  # type: ignore[arg-type]  # set by its first page
            assert (await client.post("/logout", data={"csrf_token": leaving.form_token(app)})).status_code == 303
            assert (await _vote(app, client, leaving, public_id)).status_code == 401
            assert (await _vote(app, client, revoked, public_id)).status_code == 200  # their other session is on
            assert _votes(database, ids["public"]) == (1, 1)

            # a session revoked in another transaction (another worker, the admin area)
            with database.transaction() as session:
                accounts.end_session(session, revoked.token)
            assert (await _vote(app, client, revoked, public_id, unvote=True)).status_code == 401
            assert _votes(database, ids["public"]) == (1, 1)

            # the person's organisation moved out of the item's segment: the item is not there for them
            assert (await _vote(app, client, person, segment_public_id, importance="nice_to_have")).status_code == 200
            with database.transaction() as session:
                session.get(Organisation, ids["org"]).segment_id = None
            assert (await _vote(app, client, person, segment_public_id, unvote=True)).status_code == 404
            assert _votes(database, ids["segment"]) == (1, 1)

            # an expiry that passes between two votes, nothing committed meanwhile
            with database.transaction() as session:
                for row in session.scalars(select(UserSession).where(UserSession.user_id == ids["customer"])):
                    row.expires_at = utcnow() + timedelta(seconds=1)
            assert (await _vote(app, client, person, public_id)).status_code == 200
            later = utcnow() + timedelta(seconds=5)
            with monkeypatch.context() as clock:
                clock.setattr(deps, "utcnow", lambda: later)  # the kept session's expiry
                clock.setattr(accounts, "utcnow", lambda: later)  # the transaction's own lookup
                assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 401
            assert _votes(database, ids["public"]) == (2, 2)

            # a deactivated account
            with database.transaction() as session:
                person.token = accounts.start_session(session, user=session.get(User, ids["customer"]))
            assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 200
            with database.transaction() as session:
                session.get(User, ids["customer"]).is_active = False
            assert (await _vote(app, client, person, public_id)).status_code == 401
            assert _votes(database, ids["public"]) == (1, 1)


async def test_a_vote_with_its_reason_and_a_webhook_names_the_person_on_the_apps_own_database(tmp_path):
    """What the vote writes beyond the vote row uses the person as the database has them: the private reason is
    theirs, the webhook's payload names them, and settings read under the worker's revisions apply (counts
    hidden from customers: the JSON says no count)."""
    with own_database(tmp_path, "vote-kept-reason") as url, connected(url) as database:
        with database.transaction() as session:
            customer, _ = customer_in_segment(session, "Enterprise")
            customer.display_name = "Reasoned Voter"
            admin = make_admin(session)
            item = make_item(session, title="Reasons please")
            webhooks.create_endpoint(session, data=webhooks.EndpointCreate(
                url="https://hooks.example.com/ahead", events=("vote.created",)), actor=admin)
            person = Person(session, customer)
            customer_id, email, public_id, item_id, path = (customer.id, customer.email, item.public_id, item.id,
                                                            item.path)
            admin_id = admin.id
        async with own_app(database, url) as (app, client):
            await person.get(client)
            await person.get(client, path)
            response = await _vote(app, client, person, public_id, widget="page", reason="We run night shifts.")
            assert response.status_code == 200, response.text
            body = response.json()
            assert body["my_vote"] == "critical" and "follow_html" in body
            with database.new_session(write=False) as session:
                reason = session.scalar(select(Feedback).where(Feedback.item_id == item_id))
                assert reason is not None and reason.author_id == customer_id
                assert reason.body == "We run night shifts."
                events = [job.payload["event"] for job in session.scalars(select(OutboxJob))
                          if job.kind == webhooks.KIND]
            assert [e["data"]["vote"]["voter"] for e in events if e["type"] == "vote.created"] == [
                {"email": email, "name": "Reasoned Voter"}]

            with database.transaction() as session:
                portal.update_vote_display(session, actor=session.get(User, admin_id), hide_counts=True)
            response = await _vote(app, client, person, public_id, importance="nice_to_have")
            assert response.status_code == 200 and response.json()["vote_count"] is None


async def test_sessions_people_and_organisations_changed_by_hand_with_sql_count_at_the_next_request(tmp_path):
    """What an operator does with SQL, on a connection the app does not watch and without moving any revision by
    hand: the database's triggers move the sessions revision, so neither the vote's kept person nor the signed-in
    board keeps a session deleted or expired by hand, a person deactivated or made other by hand, or an
    organisation moved out of an item's segment by hand."""
    with own_database(tmp_path, "vote-by-hand") as url, connected(url) as database:
        with database.transaction() as session:
            customer, enterprise = customer_in_segment(session, "Enterprise")
            customer.display_name = "Hand Edited"
            public = make_item(session, title="Open to all")
            segment_item = make_item(session, title="Enterprise-only", visibility=Visibility.customers,
                                     segments=[enterprise])
            deleted, expired, deactivated = (Person(session, customer) for _ in range(3))
            ids = {"customer": customer.id, "org": customer.organisation_id, "public": public.id}
            public_id, segment_public_id = public.public_id, segment_item.public_id
        by_hand = create_engine(make_url(url))  # not the app's engine: no listener of app/revision.py sees this

        def sql(statement: str, **params: Any) -> None:
            with by_hand.begin() as connection:
                connection.execute(text(statement), params)

        digest = accounts._digest  # the row's id, as the operator finds it in the table
        async with own_app(database, url) as (app, client):
            try:
                for someone in (deleted, expired, deactivated):
                    assert "Hand Edited" in (await someone.get(client)).text
                    assert (await _vote(app, client, someone, public_id)).status_code == 200  # kept from now on

                sql("DELETE FROM user_sessions WHERE id = :id", id=digest(deleted.token))
                assert (await _vote(app, client, deleted, public_id, unvote=True)).status_code == 401
                client.cookies.set(SESSION, deleted.token)
                assert "Hand Edited" not in (await client.get("/")).text  # the board too: signed out

                sql("UPDATE user_sessions SET expires_at = CURRENT_TIMESTAMP WHERE id = :id", id=digest(expired.token))
                assert (await _vote(app, client, expired, public_id, unvote=True)).status_code == 401

                assert (await _vote(app, client, deactivated, segment_public_id)).status_code == 200
                sql("UPDATE organisations SET segment_id = NULL WHERE id = :id", id=ids["org"])
                assert (await _vote(app, client, deactivated, segment_public_id, unvote=True)).status_code == 404
                sql("UPDATE users SET is_active = :no WHERE id = :id", no=False, id=ids["customer"])
                assert (await _vote(app, client, deactivated, public_id, unvote=True)).status_code == 401
                assert _votes(database, ids["public"]) == (1, 1)  # the vote of the kept session, left as it was
            finally:
                by_hand.dispose()


async def test_settings_another_worker_changed_count_at_the_next_vote_and_a_refused_vote_leaves_nothing(tmp_path):
    """On PostgreSQL the vote runs as one statement, taking the revisions this worker read last as its own and
    letting the statement check them (app/voting/views.py `_at_once`). A setting changed elsewhere (another worker:
    this process's cache still holds the old value) must count at the next vote all the same, and a vote over the
    rate limit leaves the person's vote as it was (the statement's write is rolled back)."""
    with own_database(tmp_path, "vote-guessed") as url, connected(url) as database:
        with database.transaction() as session:
            customer, _ = customer_in_segment(session, "Enterprise")
            admin = make_admin(session)
            portal.update_vote_display(session, actor=admin, hide_counts=False)
            item = make_item(session, title="Counted or not")
            person, public_id, item_id = Person(session, customer), item.public_id, item.id
        async with own_app(database, url) as (app, client):
            await person.get(client)
            first = await _vote(app, client, person, public_id, importance="important")
            assert first.status_code == 200 and first.json()["vote_count"] == 1
            with database.transaction() as session:  # what another worker's admin page writes: no cache cleared here
                session.execute(text("UPDATE portal_settings SET value = :value WHERE key = 'votes'"),
                                {"value": '{"hide_counts": true}'})
            hidden = await _vote(app, client, person, public_id, importance="critical")
            assert hidden.status_code == 200 and hidden.json()["vote_count"] is None, hidden.text
            assert hidden.json()["my_vote"] == "critical"

            app.state.settings.vote_rate_limit = "1/day"  # the person's first count from now on is their last
            assert (await _vote(app, client, person, public_id, importance="important")).status_code == 200
            limited = await _vote(app, client, person, public_id, importance="nice_to_have")
            assert limited.status_code == 429, limited.text
            assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 429
            with database.new_session(write=False) as session:
                importance = session.scalar(select(Vote.importance).where(Vote.item_id == item_id))
            assert importance == 2  # "important": the refused votes changed nothing
            assert _votes(database, item_id) == (1, 1)


def test_the_vote_at_once_waits_for_a_held_item_in_turn_not_in_slices(tmp_path):
    """The vote at once runs off the event loop, so it waits for its locks the database's whole lock timeout, in
    PostgreSQL's queue (`revision.guessed_cte`), not the request's short slice: on a busy item the slices and reruns
    left some votes waiting until they answered 503. Here the item's row is held 0.3 s, 15 slices."""
    if server_url() is None:
        pytest.skip("the vote at once is PostgreSQL's")
    with own_database(tmp_path, "vote-waits") as url:
        with connected(url) as setup, setup.transaction() as session:
            customer, segment = customer_in_segment(session, "Enterprise")
            item = make_item(session, title="Held for a moment")
            user_id, segment_id, public_id, item_id = customer.id, segment.id, item.public_id, item.id
        database = Database(url, lock_timeout=5, lock_wait_slice=0.02)
        revision.track(database)
        holder = create_engine(make_url(url))
        try:
            with database.new_session(write=False) as session:
                revision.read_all(session)  # what the worker read last: the guess
            session = database.new_session(write=True)
            guessed = revision.guess(session)
            assert guessed is not None
            with holder.connect() as other:
                other.execute(text("BEGIN"))
                other.execute(text("SELECT id FROM items WHERE id = :id FOR UPDATE"), {"id": item_id})
                release = threading.Timer(0.3, other.execute, (text("COMMIT"),))
                release.start()
                viewer = Viewer(user=session.get(User, user_id), segment_id=segment_id)
                assert viewer.user is not None
                done = voting.cast_at_once(session, viewer=viewer, user=viewer.user, public_id=public_id,
                                           importance=Importance.critical, guessed=guessed,
                                           lock_timeout=database.lock_timeout)
                release.join()
            assert done is not None and done.created and done.count == 1
            session.commit()
            session.close()
            assert _votes(database, item_id) == (1, 1)
        finally:
            holder.dispose()
            database.dispose()


async def test_votes_waiting_for_a_held_item_leave_the_other_items_their_turn(tmp_path):
    """Votes at once for an item whose row someone else holds wait one at a time for it, the others for their turn
    holding no connection: a vote for another item is answered meanwhile (a walk-through's votes for other items,
    searches and the API's list waited 10.6 s behind them, every off-loop slot taken). The held item's votes answer
    503 or, once the row is free, count; the counts stay exact."""
    if server_url() is None:
        pytest.skip("the vote at once is PostgreSQL's")
    with own_database(tmp_path, "vote-turns") as url, _with_a_holder(url, lock_timeout=1.5) as (database, holder):
        with database.transaction() as session:
            people = [Person(session, customer_in_segment(session)[0]) for _ in range(8)]
            held, free = make_item(session, title="Held by someone"), make_item(session, title="Free")
            held_id, free_id, held_public, free_public = held.id, free.id, held.public_id, free.public_id
        async with own_app(database, url) as (app, client):
            for person in people:
                await person.get(client)  # their CSRF cookies
            assert (await _vote(app, client, people[0], free_public)).status_code == 200  # a guess to take
            client.cookies.clear()

            async def vote(person: Person, public_id: str) -> tuple[int, float]:
                started = time.monotonic()
                response = await client.post(
                    f"/items/{public_id}/vote", data={"widget": "card", "next": "/", "importance": "critical"},
                    headers={"X-CSRF-Token": person.form_token(app), "Accept": "application/json",
                             "Cookie": f"{SESSION}={person.token}; {CSRF}={person.csrf}"})
                return response.status_code, time.monotonic() - started

            assert database.off_loop_slot_count < len(people) - 1
            with holder.connect() as other:
                other.execute(text("BEGIN"))
                other.execute(text("SELECT id FROM items WHERE id = :id FOR UPDATE"), {"id": held_id})
                waiting = [asyncio.create_task(vote(person, held_public)) for person in people[1:]]
                await asyncio.sleep(0.3)
                status, took = await vote(people[0], free_public)
                assert status == 200 and took < 1.0, took
                other.execute(text("COMMIT"))
                answers = await asyncio.gather(*waiting)
        counted = [s for s, _ in answers if s == 200]
        assert {s for s, _ in answers} <= {200, 503} and all(took < 4.0 for _, took in answers), answers
        assert _votes(database, held_id) == (len(counted), len(counted))
        assert _votes(database, free_id) == (1, 1)  # one person, their importance changed


@pytest.mark.skipif(server_url() is None, reason="the vote at once through the driver alone is PostgreSQL's")
async def test_a_vote_at_once_on_a_connection_the_server_closed_is_counted_once_the_usual_way(tmp_path):
    """The vote at once takes a pooled connection through the driver alone (app.db.DriverTransaction), outside
    SQLAlchemy's handling of dead connections: one the server closed (a restart, a failover) fails at its first
    statement, before anything reached the database. It is dropped and the vote runs the usual way: answered, and
    counted once."""
    with own_database(tmp_path, "vote-lost") as url, connected(url) as database, connected(url) as checking:
        with database.transaction() as session:
            customer, _ = customer_in_segment(session, "Enterprise")
            item = make_item(session, title="Through a restart")
            person, public_id, item_id = Person(session, customer), item.public_id, item.id
        async with own_app(database, url) as (app, client):
            statements = Statements(database, monkeypatch=None)
            await person.get(client)
            assert (await _vote(app, client, person, public_id)).status_code == 200  # the worker read its revisions
            assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 200
            with checking.engine.connect() as admin:  # every connection of the app's pool, closed by the server
                closed = admin.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database()"
                    " AND pid <> pg_backend_pid() AND application_name <> 'ahead revision'")).scalar()
            assert closed
            mark = len(statements.seen)
            response = await _vote(app, client, person, public_id, importance="important")
            assert response.status_code == 200, response.text
            assert response.json()["my_vote"] == "important" and response.json()["vote_count"] == 1
            assert any("INSERT INTO votes" in s or "new_vote" in s for s in statements.since(mark))  # the usual way
            assert _votes(checking, item_id) == (1, 1)


@pytest.mark.skipif(server_url() is None, reason="the vote at once through the driver alone is PostgreSQL's")
async def test_a_vote_at_once_that_waited_its_whole_lock_timeout_answers_503_at_once(tmp_path):
    """Through the driver alone, PostgreSQL's lock timeout is the 503 every request answers when it waited too long
    (Retry-After, nothing counted), after one wait: not a second one the usual way."""
    with own_database(tmp_path, "vote-busy") as url, _with_a_holder(url, lock_timeout=1.0) as (database, holder):
        with database.transaction() as session:
            person = Person(session, customer_in_segment(session)[0])
            item = make_item(session, title="Held too long")
            item_id, public_id = item.id, item.public_id
        async with own_app(database, url) as (app, client):
            await person.get(client)
            assert (await _vote(app, client, person, public_id)).status_code == 200  # a guess to take
            assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 200
            with holder.connect() as other:
                other.execute(text("BEGIN"))
                other.execute(text("SELECT id FROM items WHERE id = :id FOR UPDATE"), {"id": item_id})
                started = time.monotonic()
                response = await _vote(app, client, person, public_id)
                took = time.monotonic() - started
                other.execute(text("COMMIT"))
        assert response.status_code == 503 and response.headers["retry-after"], response.text
        assert 0.95 < took < 1.9, took  # one wait of 1 s; the usual way after it would be a second
        assert _votes(database, item_id) == (0, 0)


@pytest.mark.skipif(server_url() is None, reason="the vote at once through the driver alone is PostgreSQL's")
async def test_connections_the_votes_at_once_wrote_on_go_back_to_the_pool_writing_in_transactions(tmp_path):
    """The vote at once is a statement alone (autocommit: no BEGIN and COMMIT round trips) on a connection of the
    pool, which every other write then gets: given back still autocommitting, a session's changes on it would be
    written statement by statement, and a request failing halfway would leave its first half behind."""
    with own_database(tmp_path, "vote-alone") as url, connected(url) as database:
        with database.transaction() as session:
            person = Person(session, customer_in_segment(session)[0])
            public_ids = [make_item(session, title=f"Alone {n}").public_id for n in range(3)]
            item_id = session.scalar(select(Item.id).where(Item.public_id == public_ids[0]))
        async with own_app(database, url) as (app, client):
            await person.get(client)
            for public_id in public_ids * 2:
                assert (await _vote(app, client, person, public_id)).status_code == 200
                assert (await _vote(app, client, person, public_id, unvote=True)).status_code == 200
            assert (await _vote(app, client, person, public_ids[0])).status_code == 200
            pooled = [database.engine.raw_connection() for _ in range(database.engine.pool.size())]  # type: ignore[attr-defined]
            try:
                assert [raw.driver_connection.autocommit for raw in pooled] == [False] * len(pooled)
            finally:
                for raw in pooled:
                    raw.close()
        with pytest.raises(IntegrityError), database.transaction() as session:
            session.execute(text("UPDATE items SET vote_count = 99 WHERE id = :id"), {"id": item_id})
            session.execute(text("INSERT INTO votes (item_id, user_id) VALUES (:id, NULL)"), {"id": item_id})
        assert _votes(database, item_id) == (1, 1)  # the failed write's first half is not there
