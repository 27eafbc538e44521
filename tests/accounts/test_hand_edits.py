"""Rows an operator changed by hand with SQL, which the app's own writes never leave behind."""

from __future__ import annotations

import sqlite3

import pytest
from sqlalchemy.engine import make_url

from tests.factories import make_user
from tests.helpers.databases import connected, own_database, server_url
from tests.helpers.people import SESSION, Person, own_app


@pytest.mark.skipif(server_url() is not None, reason="PostgreSQL always enforces the foreign key: no session can "
                                                      "outlive its person there")
async def test_a_session_left_behind_by_a_person_deleted_by_hand_signs_nobody_in(tmp_path):
    """SQLite's shell leaves foreign keys off: deleting a person there leaves their sessions behind. Their cookie
    then signs nobody in (every page answered, the visitor's), instead of failing every page with a 500."""
    with own_database(tmp_path, "orphaned-session") as url, connected(url) as database:
        with database.transaction() as session:
            user = make_user(session, password=None, display_name="Deleted By Hand")
            person, user_id = Person(session, user), user.id
        shell = sqlite3.connect(make_url(url).database or "")
        try:
            shell.execute("DELETE FROM users WHERE id = ?", (user_id,))  # foreign keys off, as in `sqlite3 file.db`
            shell.commit()
            assert shell.execute("SELECT count(*) FROM user_sessions WHERE user_id = ?", (user_id,)).fetchone() == (1,)
        finally:
            shell.close()
        async with own_app(database, url) as (_app, client):
            client.cookies.set(SESSION, person.token)
            for path in ("/", "/me", "/login", "/search?q=a", "/api/v1/me/votes"):
                response = await client.get(path)
                assert response.status_code < 500, (path, response.status_code)
                assert "Deleted By Hand" not in response.text, path
            assert "Sign in" in (await client.get("/")).text
