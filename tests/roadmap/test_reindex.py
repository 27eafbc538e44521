"""`ahead reindex`: the search index rebuilt from the items as they are, after their text was changed by hand."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text, update
from typer.testing import CliRunner

from app.accounts.viewer import ANONYMOUS
from app.cli import cli
from app.roadmap import search
from app.roadmap.models import Item
from tests.factories import make_item
from tests.helpers.databases import cli_database


def _titles(database, q: str) -> list[str]:  # type: ignore[no-untyped-def]
    with database.transaction() as session:
        return [hit.path.rsplit("/", 1)[-1] for hit in search.found(session, ANONYMOUS, q)]


def test_text_changed_by_hand_is_found_under_its_new_words_once_reindexed(tmp_path, monkeypatch):
    with cli_database(tmp_path, monkeypatch, "reindex") as database:
        with database.transaction() as session:
            edited = make_item(session, title="Payroll export").id
            for n in range(3):
                make_item(session, title=f"Timesheet rule {n}")
            gone = make_item(session, title="Zebra crossing").id
        with database.transaction() as session:  # as with SQL by hand: the index does not follow
            session.execute(update(Item).where(Item.id == edited).values(title="Ledger import",
                                                                             slug="ledger-import"))
            session.execute(text("DELETE FROM items WHERE id = :id"), {"id": gone})
        assert _titles(database, "ledger") == [] and _titles(database, "payroll") == ["ledger-import"]

        result = CliRunner().invoke(cli, ["reindex", "--batch-size", "2"])  # three batches and an empty one

        assert result.exit_code == 0, result.output
        assert _titles(database, "ledger") == ["ledger-import"] and _titles(database, "payroll") == []
        assert sorted(_titles(database, "timesheet")) == [f"timesheet-rule-{n}" for n in range(3)]
        with database.transaction() as session:
            assert session.execute(text("SELECT count(*) FROM item_search")).scalar() == 4
            sqlite = session.get_bind().dialect.name == "sqlite"
        # SQLite's index (FTS5) has no foreign key: the deleted item's entry stayed until now; PostgreSQL's went with it
        said = "4 items; 1 entry of deleted items dropped." if sqlite else "4 items."
        assert result.output.strip() == f"Search index rebuilt: {said}"


def test_an_edit_under_way_is_not_indexed_over_with_the_text_before_it(tmp_path, monkeypatch):
    """On a live portal an item may be edited while its batch is indexed: the batch waits for the edit and indexes
    the text it committed, rather than writing the text from before the edit over the edit's own entry."""
    with cli_database(tmp_path, monkeypatch, "reindex-race") as database:
        if database.engine.dialect.name != "postgresql":
            pytest.skip("SQLite's writer holds the whole database: no edit runs beside a batch")
        with database.transaction() as session:
            item = make_item(session, title="Old words")
            item_id, slug = item.id, item.slug
        with database.engine.connect() as editing:
            edit = editing.begin()  # the app's edit: the item and its entry, not committed yet
            editing.execute(update(Item).where(Item.id == item_id).values(title="Fresh words"))
            search.index_texts(editing, [(item_id, "Fresh words", "", "")])

            def batch() -> None:
                with database.transaction() as session:
                    search.index_next(session.connection())

            indexing = threading.Thread(target=batch)
            indexing.start()
            time.sleep(0.3)
            assert indexing.is_alive()  # waiting for the edit
            edit.commit()
            indexing.join(10)
        assert not indexing.is_alive()
        assert _titles(database, "fresh") == [slug] and _titles(database, "old") == []
