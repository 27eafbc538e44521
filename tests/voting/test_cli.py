"""`ahead reconcile`: proves every item's vote count equals its vote rows, fixes drifts, refreshes trends."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner

from app import cli as cli_module
from app.cli import cli
from app.db import utcnow
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.factories import make_item, make_user
from tests.helpers.databases import cli_database as own_cli_database


@pytest.fixture
def cli_database(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    with own_cli_database(tmp_path, monkeypatch, "reconcile") as database:
        yield database


def test_reconcile_reports_fixes_and_then_finds_nothing(cli_database):
    with cli_database.transaction() as session:
        right, drifted, aged = make_item(session), make_item(session), make_item(session)
        for item, n in ((right, 2), (drifted, 3), (aged, 1)):
            for _ in range(n):
                voting.cast_vote(session, item=item, user=make_user(session, password=None),
                                 importance=Importance.important)
        session.execute(update(Item).where(Item.id == drifted.id).values(vote_count=7))
        # A vote older than 30 days still counted as trending: the refresh takes it out.
        session.execute(update(Vote).where(Vote.item_id == aged.id).values(created_at=utcnow() - timedelta(days=31)))
        ids = {"right": right.id, "drifted": drifted.id, "aged": aged.id, "drifted_public": drifted.public_id}

    runner = CliRunner()
    result = runner.invoke(cli, ["reconcile"])
    assert result.exit_code == 1, result.output
    assert f"item {ids['drifted_public']}: vote_count was 7, 3 vote rows; fixed" in result.output
    assert "1 vote count fixed; trend counts refreshed." in result.output

    with cli_database.transaction() as session:
        counts = {name: session.get(Item, ids[name]) for name in ("right", "drifted", "aged")}
        assert [(i.vote_count, i.trend_count) for i in counts.values()] == [(2, 2), (3, 3), (1, 0)]

    clean = runner.invoke(cli, ["reconcile"])
    assert clean.exit_code == 0, clean.output
    assert "Every vote count matches its vote rows; trend counts refreshed." in clean.output


def _drift(session, item, *, votes: int, stored: int) -> None:  # type: ignore[no-untyped-def]
    for _ in range(votes):
        voting.cast_vote(session, item=item, user=make_user(session, password=None), importance=Importance.important)
    session.execute(update(Item).where(Item.id == item.id).values(vote_count=stored, trend_count=stored))


def test_reconcile_walks_every_batch(cli_database):
    with cli_database.transaction() as session:
        items = [make_item(session) for _ in range(5)]
        for n, item in enumerate(items):
            _drift(session, item, votes=n % 3, stored=9)
        ids = [i.id for i in items]

    result = CliRunner().invoke(cli, ["reconcile", "--batch-size", "2"])
    assert result.exit_code == 1, result.output
    assert "5 vote counts fixed; trend counts refreshed." in result.output
    with cli_database.transaction() as session:
        assert [session.get(Item, i).vote_count for i in ids] == [0, 1, 2, 0, 1]
        assert [session.get(Item, i).trend_count for i in ids] == [0, 1, 2, 0, 1]


def test_reconcile_never_waits_on_an_item_someone_is_changing(cli_database, monkeypatch):
    """A vote being written or a merge holds its item's row: reconcile does not queue behind it while holding
    every item it already went through (votes on those would wait, then fail), it checks the others, commits
    them batch by batch, and says which item it could not check."""
    if cli_database.url.startswith("sqlite"):
        pytest.skip("SQLite has no row locks: a writer locks the whole database, so there is no item to skip; "
                    "there the batches' commits are what let waiting writers in")
    monkeypatch.setattr(cli_module, "BUSY_PAUSE_SECONDS", 0.01)
    with cli_database.transaction() as session:
        first, held, last = make_item(session), make_item(session), make_item(session)
        for item in (first, held, last):
            _drift(session, item, votes=1, stored=5)
        ids = {"first": first.id, "held": held.id, "last": last.id, "held_public": held.public_id}

    locker = cli_database.new_session(write=True)
    outcome: dict[str, object] = {}
    try:
        locker.execute(select(Item.id).where(Item.id == ids["held"]).with_for_update())
        worker = threading.Thread(target=lambda: outcome.update(
            result=CliRunner().invoke(cli, ["reconcile", "--batch-size", "1"])), daemon=True)
        worker.start()
        worker.join(timeout=30)
        assert not worker.is_alive(), "reconcile waited for the locked item"
        result = outcome["result"]
        assert result.exit_code == 3, result.output  # type: ignore[attr-defined]
        assert (f"1 item was being changed while reconcile ran and was not checked: {ids['held_public']}. "
                "Run `ahead reconcile` again.") in result.output  # type: ignore[attr-defined]
        # The others are fixed and committed while the locked one is still held.
        with cli_database.transaction() as session:
            assert [session.get(Item, ids[k]).vote_count for k in ("first", "held", "last")] == [1, 5, 1]
    finally:
        locker.rollback()
        locker.close()
        worker.join(timeout=30)

    again = CliRunner().invoke(cli, ["reconcile", "--batch-size", "1"])
    assert again.exit_code == 1 and "1 vote count fixed" in again.output, again.output
    with cli_database.transaction() as session:
        assert session.get(Item, ids["held"]).vote_count == 1
