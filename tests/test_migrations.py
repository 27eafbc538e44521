"""Alembic is the only way the schema is made: the models and the migrations must agree."""

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from app.migrate import downgrade, head_revision, upgrade
from app.models import metadata
from app.roadmap.search import INDEX_TABLES
from tests.helpers.databases import create_database


def _not_the_search_index(name, type_, parent_names):  # type: ignore[no-untyped-def]
    # The full-text index (an FTS5 virtual table and its shadow tables on SQLite, a tsvector table on
    # PostgreSQL) is made by its migration with dialect-specific SQL and is not in the models on purpose.
    return not (type_ == "table" and name in INDEX_TABLES)


def test_models_and_migrations_agree(database):
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": _not_the_search_index})
        differences = compare_metadata(context, metadata)
    assert differences == []


def test_upgrade_downgrade_upgrade_on_an_empty_database(tmp_path):
    url, drop = create_database(tmp_path, "roundtrip")
    try:
        upgrade(url)
        downgrade(url, "base")
        engine = create_engine(url)
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert MigrationContext.configure(conn).get_current_revision() == head_revision()
            assert "items" in inspect(conn).get_table_names()
        engine.dispose()
    finally:
        drop()


async def test_readyz_reports_the_current_revision(client):
    response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json()["checks"]["migrations"] == {"state": "ok", "detail": f"at head {head_revision()}"}


async def test_healthz(client):
    assert (await client.get("/healthz")).json() == {"status": "ok"}


def test_upgrading_keeps_existing_rows(tmp_path):
    """SQLite rebuilds a table to alter it; rows that refer to it must survive (no cascade)."""
    from sqlalchemy import text

    url, drop = create_database(tmp_path, "keep")
    try:
        upgrade(url, "aa6a4c3d1b95")
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO users (id, email, display_name, role, is_active, created_at) "
                              "VALUES (1, 'kept@example.com', 'Kept', 'admin', true, CURRENT_TIMESTAMP)"))
            conn.execute(text("INSERT INTO user_sessions (id, user_id, created_at, expires_at, user_agent) "
                              "VALUES ('s1', 1, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, '')"))
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM user_sessions")).scalar() == 1
            assert conn.execute(text("SELECT email FROM users")).scalar() == "kept@example.com"
        engine.dispose()
    finally:
        drop()


def _add_public_items(conn, items):  # type: ignore[no-untyped-def]
    """A product (id 1) and published public items, ids 1, 2, ... in order, as (title, description): rows as the
    schema had them from the full-text search's revision on, written without the app's code."""
    from sqlalchemy import text

    conn.execute(text("INSERT INTO products (id, slug, name, description, position, created_at) "
                      "VALUES (1, 'web', 'Web app', '', 0, CURRENT_TIMESTAMP)"))
    stage_id = conn.execute(text("SELECT id FROM stages WHERE slug = 'planned'")).scalar()
    for n, (title, description) in enumerate(items, start=1):
        conn.execute(text(
            "INSERT INTO items (id, public_id, slug, product_id, stage_id, title, summary, description, "
            "internal_notes, release_notes, timeframe, visibility, vote_count, trend_count, published_at, "
            "created_at, updated_at) VALUES (:id, :pid, :slug, 1, :stage, :title, '', :description, '', '', "
            "'next', 'public', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
            {"id": n, "pid": f"mig{n}", "slug": f"item-{n}", "stage": stage_id, "title": title,
             "description": description})


def test_the_search_index_is_built_for_existing_items_and_a_downgrade_restores_the_word_index(tmp_path):
    """2026-11-25-1931_full_text_search indexes the items already there; its downgrade refills search_terms."""
    from sqlalchemy import text

    from app.accounts.viewer import ANONYMOUS
    from app.db import Database
    from app.roadmap.search import search_items

    before = "4650dc66b13d"
    url, drop = create_database(tmp_path, "search")
    try:
        upgrade(url, before)
        engine = create_engine(url)
        with engine.begin() as conn:
            _add_public_items(conn, [("Résumé parsing", "Reads CVs."), ("Dark mode", "Easier on the eyes at night.")])
        engine.dispose()

        upgrade(url)
        db = Database(url)
        with db.transaction() as session:
            assert [hit.item.title for hit in search_items(session, ANONYMOUS, "resume")] == ["Résumé parsing"]
            assert [hit.item.title for hit in search_items(session, ANONYMOUS, "eye nig")] == ["Dark mode"]
        db.dispose()

        downgrade(url, before)
        engine = create_engine(url)
        with engine.connect() as conn:
            assert "item_search" not in inspect(conn).get_table_names()
            rows = conn.execute(text("SELECT item_id, field FROM search_terms WHERE term = 'resume'")).all()
            assert [tuple(row) for row in rows] == [(1, 3)]
        engine.dispose()
    finally:
        drop()


def test_items_indexed_before_case_folding_are_found_by_ss_after_it_and_a_downgrade_folds_them_back(tmp_path):
    """2026-12-05-2110_search_case_folding indexes again the items whose words case folding changes ('Straße' ->
    'strasse'); its downgrade gives them the lower-cased words again. Items in ASCII are left as they are."""
    from sqlalchemy import text

    from app.accounts.viewer import ANONYMOUS
    from app.db import Database
    from app.roadmap.search import search_items

    url, drop = create_database(tmp_path, "casefold")
    try:
        upgrade(url, "c82d8e1bc9e0")
        engine = create_engine(url)
        with engine.begin() as conn:
            _add_public_items(conn, [("Straße names", ""), ("Dark mode", "")])
            for n, title in enumerate(["Straße names", "Dark mode"], start=1):
                # indexed as that release's app did: lower-cased ('straße')
                if engine.dialect.name == "sqlite":
                    conn.execute(text("INSERT INTO item_search (rowid, title, summary, body) VALUES (:id, :t, '', '')"),
                                 {"id": n, "t": title.lower()})
                else:
                    vector = " ".join(f"'{word}':{i}A" for i, word in enumerate(title.lower().split(), start=1))
                    conn.execute(text("INSERT INTO item_search (item_id, document, heading) VALUES "
                                      "(:id, CAST(:v AS tsvector), CAST(:v AS tsvector))"), {"id": n, "v": vector})
        engine.dispose()

        def titles(q: str) -> list[str]:
            db = Database(url)
            try:
                with db.transaction() as session:
                    return [hit.item.title for hit in search_items(session, ANONYMOUS, q)]
            finally:
                db.dispose()

        assert titles("strasse") == []  # the old index holds 'straße'
        upgrade(url)
        assert titles("strasse") == ["Straße names"]
        assert titles("dark") == ["Dark mode"]

        downgrade(url, "c82d8e1bc9e0")
        engine = create_engine(url)
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                found = conn.execute(text("SELECT rowid FROM item_search WHERE item_search MATCH 'straße'")).all()
            else:
                found = conn.execute(text("SELECT item_id FROM item_search WHERE document @@ 'straße'::tsquery")).all()
            assert [row[0] for row in found] == [1]
        engine.dispose()
    finally:
        drop()


def test_duplicate_reasons_collapse_to_the_newest_and_stay_one_per_person_and_item(tmp_path):
    """2026-12-03-0615_one_reason_per_vote: each "Update my vote" with text used to add a reason; the newest
    of a person's reasons on an item is kept, everything else (other people, other items, ideas) stays."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    before = "3d8f41c0a7e2"
    url, drop = create_database(tmp_path, "reasons")
    try:
        upgrade(url, before)
        engine = create_engine(url)
        with engine.begin() as conn:
            for user_id in (1, 2):
                conn.execute(text("INSERT INTO users (id, email, display_name, role, is_active, created_at) "
                                  "VALUES (:id, :email, 'Customer', 'customer', true, CURRENT_TIMESTAMP)"),
                             {"id": user_id, "email": f"c{user_id}@example.com"})
            conn.execute(text("INSERT INTO products (id, slug, name, description, position, created_at) "
                              "VALUES (1, 'web', 'Web app', '', 0, CURRENT_TIMESTAMP)"))
            stage_id = conn.execute(text("SELECT id FROM stages WHERE slug = 'planned'")).scalar()
            for item_id in (1, 2):
                conn.execute(text(
                    "INSERT INTO items (id, public_id, slug, product_id, stage_id, title, summary, description, "
                    "internal_notes, release_notes, timeframe, visibility, vote_count, trend_count, published_at, "
                    "created_at, updated_at) VALUES (:id, :pid, :slug, 1, :stage, 'Item', '', '', '', '', "
                    "'next', 'public', 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"),
                    {"id": item_id, "pid": f"rsn{item_id}", "slug": f"item-{item_id}", "stage": stage_id})
            rows = [  # id, kind, author, item, body, created_at
                (1, "reason", 1, 1, "first", "2026-11-01 10:00:00"),
                (2, "reason", 1, 1, "newest", "2026-11-03 10:00:00"),
                (3, "reason", 1, 1, "middle", "2026-11-02 10:00:00"),
                (4, "reason", 1, 2, "other item", "2026-11-01 10:00:00"),
                (5, "reason", 2, 1, "other person", "2026-11-01 10:00:00"),
                (6, "idea", 1, 1, "an idea", "2026-11-01 10:00:00"),
                (7, "idea", 1, 1, "another idea", "2026-11-04 10:00:00"),
            ]
            for id_, kind, author, item, body, at in rows:
                conn.execute(text(
                    "INSERT INTO feedback (id, kind, state, author_id, item_id, title, body, decline_reason, "
                    "source_url, created_at, updated_at) VALUES (:id, :kind, 'linked', :author, :item, '', :body, "
                    "'', '', :at, :at)"), {"id": id_, "kind": kind, "author": author, "item": item, "body": body,
                                          "at": at})
        engine.dispose()

        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT id, body FROM feedback ORDER BY id")).all()
            assert [tuple(row) for row in kept] == [(2, "newest"), (4, "other item"), (5, "other person"),
                                                   (6, "an idea"), (7, "another idea")]
            with pytest.raises(IntegrityError):
                conn.execute(text("INSERT INTO feedback (kind, state, author_id, item_id, title, body, "
                                  "decline_reason, source_url, created_at, updated_at) VALUES ('reason', 'linked', "
                                  "1, 1, '', 'again', '', '', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
        engine.dispose()
        downgrade(url, before)
        upgrade(url)
    finally:
        drop()


def test_duplicate_links_merge_and_duplicate_hook_names_get_a_number(tmp_path):
    """2026-12-03-1200_tech_uniques_hook_scope: the same issue on one initiative in two letter cases becomes one
    link (the oldest, with the newest tracker news); a webhook name used again is numbered; then both are unique."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    before = "3f6a9c2e8d14"
    url, drop = create_database(tmp_path, "techuniq")
    try:
        upgrade(url, before)
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO initiatives (id, title, description, status, created_at, updated_at) "
                              "VALUES (1, 'Exports', '', 'active', CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"))
            links = [  # id, key, status, done, tracker_updated_at
                (1, "Acme/App#88", "open", False, "2026-12-01 10:00:00"),
                (2, "acme/app#88", "closed", True, "2026-12-02 10:00:00"),
                (3, "ACME/app#88", "open", False, None),
                (4, "acme/app#89", "open", False, None),
            ]
            for id_, key, status, done, at in links:
                conn.execute(text(
                    "INSERT INTO backlog_links (id, initiative_id, kind, key, url, title, status, started, done, "
                    "tracker_updated_at, created_at) VALUES (:id, 1, 'github', :key, '', '', :status, :done, :done, "
                    ":at, CURRENT_TIMESTAMP)"), {"id": id_, "key": key, "status": status, "done": done, "at": at})
            for id_, kind, name in ((1, "github", "CI"), (2, "generic", "ci"), (3, "jira", "CI (2)"),
                                    (4, "gitlab", "Other")):
                conn.execute(text("INSERT INTO tracker_hooks (id, public_id, kind, name, salt, created_at, "
                                  "refused_count, last_refused_reason) VALUES (:id, :pid, :kind, :name, 's', "
                                  "CURRENT_TIMESTAMP, 0, '')"), {"id": id_, "pid": f"h{id_}", "kind": kind, "name": name})
        engine.dispose()

        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT id, key, status, done FROM backlog_links ORDER BY id")).all()
            assert [tuple(row) for row in kept] == [(1, "Acme/App#88", "closed", True), (4, "acme/app#89", "open", False)]
            hooks = conn.execute(text("SELECT id, name, tracker FROM tracker_hooks ORDER BY id")).all()
            assert [tuple(row) for row in hooks] == [(1, "CI", "github"), (2, "ci (3)", None), (3, "CI (2)", "jira"),
                                                     (4, "Other", "gitlab")]
            with pytest.raises(IntegrityError):
                conn.execute(text("INSERT INTO backlog_links (initiative_id, kind, key, url, title, status, started, "
                                  "done, created_at) VALUES (1, 'github', 'ACME/APP#89', '', '', 'open', false, "
                                  "false, CURRENT_TIMESTAMP)"))
        engine.dispose()
        downgrade(url, before)
        upgrade(url)
    finally:
        drop()


def test_a_webhooks_latest_refusal_moves_to_its_slot_and_back(tmp_path):
    """2026-12-03-1250_tracker_refusals: a webhook's count and latest refusal become its slot `count % 20`,
    numbered `count`; a downgrade puts the count, time and reason back on the webhook."""
    import pytest
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError

    before = "b71e4c90a2d3"
    url, drop = create_database(tmp_path, "refusals")
    try:
        upgrade(url, before)
        engine = create_engine(url)
        with engine.begin() as conn:
            for id_, count, reason in ((1, 23, "The signature does not match."), (2, 0, "")):
                conn.execute(text(
                    "INSERT INTO tracker_hooks (id, public_id, kind, name, salt, created_at, refused_count, "
                    "last_refused_at, last_refused_reason) VALUES (:id, :pid, 'github', :name, 's', CURRENT_TIMESTAMP, "
                    ":count, :at, :reason)"), {"id": id_, "pid": f"h{id_}", "name": f"hook {id_}", "count": count,
                                                "at": "2026-12-03 10:00:00" if count else None, "reason": reason})
        engine.dispose()
        upgrade(url)
        engine = create_engine(url)
        with engine.connect() as conn:
            rows = conn.execute(text("SELECT hook_id, slot, seq, reason FROM tracker_refusals")).all()
            assert [tuple(r) for r in rows] == [(1, 3, 23, "The signature does not match.")]
            with pytest.raises(IntegrityError):  # the names' unique index survived the table's rewrite
                conn.execute(text("INSERT INTO tracker_hooks (public_id, kind, name, salt, created_at) "
                                  "VALUES ('h3', 'gitlab', 'HOOK 1', 's', CURRENT_TIMESTAMP)"))
        engine.dispose()
        downgrade(url, before)
        engine = create_engine(url)
        with engine.connect() as conn:
            hooks = conn.execute(text("SELECT id, refused_count, last_refused_reason, last_refused_at IS NOT NULL "
                                      "FROM tracker_hooks ORDER BY id")).all()
            assert [tuple(r) for r in hooks] == [(1, 23, "The signature does not match.", True), (2, 0, "", False)]
        engine.dispose()
        upgrade(url)
    finally:
        drop()
