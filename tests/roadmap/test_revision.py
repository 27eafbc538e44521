"""The content revision (app/revision.py): every way of writing a content table moves it, and only the app's
engine and session factories are watched.

The parametrised test writes each table the revision covers (`revision.content_tables()`, from the models)
by Core, three ways that do not go through an ORM flush, and checks that the page a worker kept is no
longer served.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import (
    Column,
    Integer,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    false,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.orm import Session

import app.models  # noqa: F401  # every model's table, so that content_tables() lists them all
from app import revision
from app.accounts import service as accounts
from app.accounts.models import Role, UserSession
from app.db import Base
from app.outbox import service as outbox_service
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_item, make_user
from tests.feedback.helpers import make_organisation, make_segment

# Counts of the cache's hits and misses: a minute turning between two visits would add a miss.
pytestmark = pytest.mark.usefixtures("still_minute")


def _first_plain_column(table: Table) -> str:
    """A column an `UPDATE … SET c = c` may name: not computed, not part of the key where there is another."""
    plain = [c for c in table.c if c.computed is None]
    return next((c.name for c in plain if not c.primary_key), plain[0].name)


def test_the_covered_tables_are_the_models_but_the_unshown_ones():
    covered = revision.content_tables()
    assert {"items", "votes", "comments", "feedback", "portal_settings", "users"} <= set(covered)
    assert not set(covered) & revision.UNSHOWN_TABLES
    assert set(covered) | revision.UNSHOWN_TABLES == set(Base.metadata.tables)


@pytest.mark.parametrize("table_name", revision.content_tables())
async def test_a_core_write_to_any_content_table_moves_the_revision_and_drops_the_kept_page(
        app, client: httpx.AsyncClient, session: Session, table_name: str) -> None:
    item = make_item(session, title="Kept page")
    table = Base.metadata.tables[table_name]
    column = table.c[_first_plain_column(table)]
    writes = {
        "session.execute(update(table))": lambda: session.execute(update(table).values({column.name: column})),
        "connection.execute(delete(table))": lambda: session.connection().execute(delete(table).where(false())),
        "exec_driver_sql(UPDATE …)": lambda: session.connection().exec_driver_sql(
            f'UPDATE "{table_name}" SET "{column.name}" = "{column.name}" WHERE 1 = 0'),  # nosec B608 # test names
    }
    for how, write in writes.items():
        assert item.title in (await client.get("/")).text
        misses = app.state.pages.misses
        assert (await client.get("/")).status_code == 200
        assert app.state.pages.misses == misses, "the second visit is served from the cache"
        before, votes_before = revision.both(session)
        write()
        if table_name in revision.VOTE_TABLES and not how.startswith("exec_driver_sql"):
            # What a vote writes moves the votes revision only: the page stays kept, its counts are filled
            # (tests/roadmap/test_kept_pages.py); plain SQL is not told apart and moves the content revision.
            assert revision.votes(session) != votes_before and revision.current(session) == before, how
            assert (await client.get("/")).status_code == 200
            assert app.state.pages.misses == misses, how
            continue
        assert revision.current(session) != before, how
        assert (await client.get("/")).status_code == 200
        assert app.state.pages.misses == misses + 1, f"{how}: the kept page was served after the write"


def test_a_core_insert_through_the_session_moves_the_revision(session: Session) -> None:
    before = revision.current(session)
    session.execute(insert(Base.metadata.tables["tags"]).values(name="Core tag", slug="core-tag"))
    assert revision.current(session) != before


def test_a_select_that_writes_through_its_ctes_moves_what_they_write(session: Session) -> None:
    """PostgreSQL's data-modifying CTEs in a SELECT (the vote at once, app/voting/service.py): a CTE writing a
    content table moves the content revision; CTEs writing only what a vote writes move the votes revision alone."""
    if session.get_bind().dialect.name != "postgresql":
        pytest.skip("SQLite has no data-modifying CTEs")
    item = make_item(session)
    items = Base.metadata.tables["items"]
    content, votes = revision.both(session)
    renamed = update(items).where(items.c.id == item.id).values(title="Renamed by a CTE").returning(items.c.id)
    session.execute(select(literal(1)).add_cte(renamed.cte("renamed")))
    assert revision.current(session) != content
    content, votes = revision.both(session)
    counted = (update(items).where(items.c.id == item.id).values(vote_count=items.c.vote_count + 1)
               .returning(items.c.id))
    session.execute(select(literal(1)).add_cte(counted.cte("counted")))
    assert revision.both(session)[0] == content and revision.votes(session) != votes


def test_a_guess_is_the_last_read_until_a_statement_confirms_it(session: Session) -> None:
    """`revision.guess` offers what this process read last, once per session; what a guess fills is forgotten
    when it fails, and the next read is a real one."""
    read = revision.read_all(session)  # a real read: the process's last
    session.rollback()
    guessed = revision.guess(session)
    assert guessed == (read[0], read[1], read[3]) and revision.guessing(session)
    assert revision.guess(session) is None  # once per session
    revision.guess_failed(session)
    assert not revision.guessing(session)
    session.execute(insert(Base.metadata.tables["tags"]).values(name="Guessed tag", slug="guessed-tag"))
    assert revision.current(session) != read[0]  # read for real: the write moved it
    session.rollback()
    assert revision.guess(session) is not None
    revision.confirmed(session)
    assert not revision.guessing(session)


def test_a_write_to_an_unshown_table_or_column_leaves_the_revision(session: Session) -> None:
    user = make_user(session, password=None)
    before = revision.current(session)
    session.connection().execute(delete(Base.metadata.tables["user_sessions"]).where(false()))
    user.last_login_at = user.created_at
    session.flush()
    assert revision.current(session) == before
    user.display_name = "Renamed"
    session.flush()
    assert revision.current(session) != before


def test_every_write_of_a_sign_in_session_moves_the_sessions_revision_and_nothing_else(session: Session) -> None:
    """What PostgreSQL's workers keep signed-in viewers under (app/deps.py SignedInViewers): a sign-in, a changed
    expiry, a sign-out, "sign out everywhere", by the ORM, Core or plain SQL, each move the sessions revision; none
    moves what pages are kept under (content, votes, settings), and a vote does not move the sessions revision."""
    user = make_user(session, password=None)
    sessions = Base.metadata.tables["user_sessions"]
    tokens: list[str] = []

    def expire_sooner() -> None:
        for row in session.scalars(select(UserSession).where(UserSession.user_id == user.id)):
            row.expires_at = row.expires_at - timedelta(days=1)
        session.flush()

    writes = {
        "sign-in": lambda: tokens.append(accounts.start_session(session, user=user)),
        "a shorter expiry (ORM)": expire_sooner,
        "a changed row (Core)": lambda: session.execute(update(sessions).values(user_agent="Changed")),
        "plain SQL": lambda: session.connection().exec_driver_sql(
            "UPDATE user_sessions SET user_agent = 'By hand'"),
        "sign-out": lambda: accounts.end_session(session, tokens[0]),
        "sign out everywhere": lambda: accounts.end_all_sessions(session, user=user),
    }

    def read() -> tuple[int, int, int]:
        return revision.current(session), revision.votes(session), revision.settings(session)

    tokens.append(accounts.start_session(session, user=user))
    for how, write in writes.items():
        before, sessions_before = read(), revision.sessions(session)
        write()
        assert revision.sessions(session) != sessions_before, how
        assert read() == before, how

    item, before = make_item(session, title="Voted"), revision.sessions(session)
    voting.cast_vote(session, item=item, user=user, importance=Importance.important)
    assert revision.sessions(session) == before
    user.last_login_at = user.created_at  # nothing kept of a viewer reads it
    session.flush()
    assert revision.sessions(session) == before


def test_what_a_kept_viewer_is_made_of_moves_the_sessions_revision(session: Session) -> None:
    """A person's name, email, role, activity and organisation, an organisation's segment, a deleted person: the
    database's triggers move the sessions revision (and the app the content revision, as for any content)."""
    organisation = make_organisation(session, "Moved Ltd")
    user = make_user(session, password=None)
    segment = make_segment(session, "Moved to")

    def set_to(target: object, name: str, value: object) -> Callable[[], None]:
        return lambda: setattr(target, name, value)

    changes = {
        "name": set_to(user, "display_name", "Renamed"),
        "email": set_to(user, "email", "renamed@example.com"),
        "role": set_to(user, "role", Role.admin),
        "deactivated": set_to(user, "is_active", False),
        "organisation": set_to(user, "organisation_id", organisation.id),
        "segment": set_to(organisation, "segment_id", segment.id),
        "deleted": lambda: session.delete(user),
    }
    for how, change in changes.items():
        before = revision.sessions(session)
        change()
        session.flush()
        assert revision.sessions(session) != before, how


def test_queueing_and_sending_mail_and_moving_the_desk_windows_leave_the_revision(session: Session) -> None:
    """Every email sent and webhook call marks its outbox job; the desk's aggregates move with each day. None
    of it is on a kept page, so none of it may empty every worker's page cache."""
    before = revision.current(session)
    outbox_service.enqueue_email(session, to="reader@example.com", template="magic_link", context={}, key="kept")
    session.flush()
    session.execute(update(Base.metadata.tables["outbox_jobs"]).values(attempts=1))
    session.connection().exec_driver_sql("UPDATE desk_spans SET since = since WHERE 1 = 0")
    assert revision.current(session) == before


def test_a_plain_session_outside_the_app_is_left_alone() -> None:
    """Another engine in the same process, with a table that has a content table's name and no revision
    table: no listener of the app's runs on it (one would fail on the missing content_revisions)."""
    engine = create_engine("sqlite://")
    items = Table("items", MetaData(), Column("id", Integer, primary_key=True), Column("title", String(50)))
    items.metadata.create_all(engine)
    with Session(engine) as plain:
        plain.execute(insert(items).values(id=1, title="Elsewhere"))
        plain.connection().execute(update(items).values(title="Still elsewhere"))
        plain.commit()
        assert plain.scalar(items.select().with_only_columns(items.c.title)) == "Still elsewhere"
        assert "content_revisions" not in {name for name, in plain.connection().exec_driver_sql(
            "SELECT name FROM sqlite_master")}
    engine.dispose()
