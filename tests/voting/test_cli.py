"""`ahead reconcile`: proves every item's vote count equals its vote rows, fixes drifts, refreshes trends."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.db import Database, utcnow
from app.migrate import upgrade
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance, Vote
from tests.conftest import create_database
from tests.factories import make_item, make_user


@pytest.fixture
def cli_database(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    url, drop = create_database(tmp_path, "reconcile")
    upgrade(url)
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    get_settings.cache_clear()
    database = Database(url)
    yield database
    database.dispose()
    get_settings.cache_clear()
    drop()


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
