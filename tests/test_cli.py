"""The `ahead` command as an operator uses it."""

import sqlite3

import pytest
from typer.testing import CliRunner

from app.accounts import passwords
from app.accounts import service as accounts
from app.cli import cli
from app.config import get_settings
from app.db import Database
from tests.helpers.databases import create_database


@pytest.fixture
def cli_database(tmp_path, monkeypatch):
    url, drop = create_database(tmp_path, "cli")
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    get_settings.cache_clear()
    yield url
    get_settings.cache_clear()
    drop()


def test_migrate_create_admin_and_reset_password(cli_database):
    runner = CliRunner()
    assert runner.invoke(cli, ["migrate"]).exit_code == 0

    created = runner.invoke(cli, ["create-admin", "Boss@Example.com", "--name", "Bo Boss"], input="first password 1\n")
    assert created.exit_code == 0, created.output
    assert "Admin boss@example.com created" in created.output

    duplicate = runner.invoke(cli, ["create-admin", "boss@example.com"], input="first password 1\n")
    assert duplicate.exit_code == 1
    assert "already exists" in duplicate.output

    weak = runner.invoke(cli, ["create-admin", "other@example.com"], input="short\n")
    assert weak.exit_code == 1
    assert "at least 10 characters" in weak.output

    database = Database(cli_database)
    with database.transaction() as session:
        user = accounts.get_user_by_email(session, "boss@example.com")
        assert user is not None and user.is_admin
        token = accounts.start_session(session, user=user)

    reset = runner.invoke(cli, ["reset-password", "boss@example.com"], input="second password 2\n")
    assert reset.exit_code == 0, reset.output
    with database.transaction() as session:
        boss = accounts.get_user_by_email(session, "boss@example.com")
        assert passwords.verify_password_blocking(boss.password_hash, "second password 2")
        assert not passwords.verify_password_blocking(boss.password_hash, "first password 1")
        assert accounts.load_session(session, token) is None  # the old session was ended
    database.dispose()

    unknown = runner.invoke(cli, ["reset-password", "ghost@example.com"], input="whatever password\n")
    assert unknown.exit_code == 1
    assert "No user" in unknown.output


def test_serve_keeps_idle_connections_open_longer_than_a_proxy_does(monkeypatch):
    """nginx keeps idle connections to the app for 60 s: were the app to close one first (uvicorn's default is 5 s),
    a vote nginx sends on it at that moment would be answered 502 (bench/instances.py, keep-alive)."""
    import uvicorn

    served: dict[str, object] = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: served.update(options))
    monkeypatch.setenv("PORT", "8000")  # `serve --port` sets it for the workers: put back afterwards
    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(cli, ["serve", "--port", "8123"]).exit_code == 0
        assert served["timeout_keep_alive"] == 75 and served["port"] == 8123
        assert served["timeout_worker_healthcheck"] >= 30  # a worker slow to start on a busy machine is kept
        # uvloop accepts one connection per turn of a busy loop: a burst of visitors waited seconds to get in
        # (bench/README.md, "uvloop's accept")
        assert served["loop"] == "app.serving:new_event_loop"
        # No line per request unless asked for: the proxy logs each, and the line cost a kept page a third of its
        # throughput (bench/README.md)
        assert served["access_log"] is False
        monkeypatch.setenv("KEEP_ALIVE_SECONDS", "620")  # behind Google's load balancers (600 s)
        monkeypatch.setenv("ACCESS_LOG", "true")
        get_settings.cache_clear()
        assert CliRunner().invoke(cli, ["serve"]).exit_code == 0
        assert served["timeout_keep_alive"] == 620 and served["access_log"] is True
    finally:
        get_settings.cache_clear()


def test_a_missing_setting_is_one_line_saying_what_to_set_not_a_traceback(tmp_path, monkeypatch, capsys):
    """The walk-through: `ahead backup` under AHEAD_ENV=production without BASE_URL printed 45 lines of traceback."""
    monkeypatch.setenv("AHEAD_ENV", "production")
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'ahead.db'}")
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    monkeypatch.delenv("BASE_URL", raising=False)
    assert _main_exits(monkeypatch, ["backup", str(tmp_path / "copy.db")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ahead: BASE_URL must be set when AHEAD_ENV=production") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def _main_exits(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> object:
    """The `ahead` command's exit code for `args`, its settings read afresh from the environment."""
    from app.cli import main

    monkeypatch.setattr("sys.argv", ["ahead", *args])
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as stopped:
            main()
    finally:
        get_settings.cache_clear()
    return stopped.value.code


def test_a_database_url_of_another_kind_is_one_line_before_any_command_reaches_for_it(tmp_path, monkeypatch, capsys):
    """The walk-through: `DATABASE_URL=bogus://x ahead backup` ran pg_dump against host "x"; `ahead migrate` printed
    SQLAlchemy's traceback."""
    monkeypatch.setenv("DATABASE_URL", "mysql://ahead:hunter2@db/ahead")
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    for command in (["backup", str(tmp_path / "copy.dump")], ["migrate"]):
        assert _main_exits(monkeypatch, command) == 2
        err = capsys.readouterr().err
        assert err.strip() == "ahead: DATABASE_URL must be a sqlite:/// or postgresql:// address, not 'mysql'"
    assert not (tmp_path / "copy.dump").exists()


def test_a_command_on_a_database_without_the_schema_says_to_migrate_and_makes_no_file(tmp_path, monkeypatch):
    """A walk-through: run without DATABASE_URL (the default SQLite file), reset-password printed a traceback from
    its first query and left an empty database behind."""
    missing = tmp_path / "nothing-here.db"
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()  # a file, but no schema
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    runner = CliRunner()
    try:
        for path in (missing, empty):
            monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
            get_settings.cache_clear()
            for args in (["reset-password", "boss@example.com"], ["create-admin", "boss@example.com"], ["reconcile"]):
                refused = runner.invoke(cli, args, input="a long enough password\n")
                assert refused.exit_code == 1, (path, args, refused.output)
                assert "holds no Ahead schema: run `ahead migrate` first" in refused.output, refused.output
                assert "Traceback" not in refused.output
        assert not missing.exists()
        assert empty.stat().st_size == 0
    finally:
        get_settings.cache_clear()
