"""`ahead outbox`: what waits and what failed, with the reason; --retry queues failed and dead jobs again."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from typer.testing import CliRunner

from app.cli import cli
from app.outbox import service
from app.outbox.models import JobState, OutboxJob
from tests.helpers.databases import cli_database as own_cli_database


@pytest.fixture
def cli_database(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    with own_cli_database(tmp_path, monkeypatch, "outboxcli") as database:
        yield database


def test_outbox_lists_waiting_and_failed_jobs_with_the_reason_and_retries_them(cli_database):
    with cli_database.transaction() as session:
        for to in ("a@example.com", "b@example.com", "c@example.com"):
            service.enqueue_email(session, to=to, template="test", context={"base_url": "x"}, key=to)
        session.execute(update(OutboxJob).where(OutboxJob.key == "email:b@example.com")
                        .values(state=JobState.failed, attempts=1, last_error="refused by relay:25: 550 5.1.1 No such user"))
        session.execute(update(OutboxJob).where(OutboxJob.key == "email:c@example.com")
                        .values(state=JobState.dead, attempts=8, last_error="SMTP server relay:25 could not be reached"))
    runner = CliRunner()
    shown = runner.invoke(cli, ["outbox"])
    assert shown.exit_code == 0, shown.output
    assert "Waiting: 1 (1 due now). Failed: 1. Dead: 1." in shown.output
    assert "failed email to b@example.com" in shown.output and "550 5.1.1 No such user" in shown.output
    assert "dead email to c@example.com" in shown.output and "could not be reached" in shown.output
    assert "ahead outbox --retry" in shown.output

    retried = runner.invoke(cli, ["outbox", "--retry"])
    assert retried.exit_code == 0 and "2 jobs queued again." in retried.output
    assert "Waiting: 3 (3 due now). Failed: 0. Dead: 0." in runner.invoke(cli, ["outbox"]).output
