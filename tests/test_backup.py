"""`ahead backup` and `ahead restore`: a SQLite backup made while another process writes is one committed state,
whole, and restores into a fresh database the portal can use; restore will not pull a database from under a
running server unless told to; on PostgreSQL backup is pg_dump's custom format."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from app.cli import cli
from app.config import get_settings
from app.migrate import head_revision, upgrade
from tests.helpers.databases import cli_database, server_url

runner = CliRunner()

# Another process writing to the database as the portal would: in WAL mode, one transaction per pair of rows,
# as fast as it can, until the stop file appears. Each transaction inserts two organisations, w-N-a and w-N-b:
# a consistent copy holds both or neither, and every N below the highest it holds.
WRITER = """
import sqlite3, sys, os
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=WAL")
n = 0
while not os.path.exists(sys.argv[2]):
    db.execute("BEGIN IMMEDIATE")
    for half in "ab":
        db.execute("INSERT INTO organisations (name, revenue, created_at) VALUES (?, 0, '2026-01-01')",
                   (f"w-{n}-{half}",))
    db.execute("COMMIT")
    n += 1
"""

# Another process that holds the database open (as `ahead serve` does), and with `hold-write` also holds a write
# transaction with an uncommitted row; it says "ready", and lets go when it reads a line.
HOLDER = """
import sqlite3, sys
db = sqlite3.connect(sys.argv[1], isolation_level=None, timeout=30)
db.execute("PRAGMA journal_mode=WAL")
db.execute("SELECT count(*) FROM organisations").fetchone()
if sys.argv[2] == "hold-write":
    db.execute("BEGIN IMMEDIATE")
    db.execute("INSERT INTO organisations (name, revenue, created_at) VALUES ('uncommitted', 0, '2026-01-01')")
print("ready", flush=True)
sys.stdin.readline()
print(db.execute("SELECT count(*) FROM organisations").fetchone()[0], flush=True)
if sys.argv[2] == "hold-write":
    db.execute("COMMIT")
"""


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with 2,000 organisations, made once; each test works on a copy."""
    path = tmp_path_factory.mktemp("template") / "ahead.db"
    upgrade(f"sqlite+pysqlite:///{path}")
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO organisations (name, revenue, created_at) VALUES (?, 0, '2026-01-01')",
                       [(f"seed-{n:05d} " + "x" * 200,) for n in range(2000)])
    return path


@pytest.fixture
def sqlite_database(migrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The portal's SQLite database (WAL, as the app makes it), that `ahead` finds through DATABASE_URL: SQLite
    on both of the suite's passes, since backup and restore of this kind are SQLite's."""
    path = tmp_path / "live" / "ahead.db"
    path.parent.mkdir()
    with sqlite3.connect(migrated) as source, sqlite3.connect(path) as target:
        source.backup(target)
        target.execute("PRAGMA journal_mode=WAL")
    _point_at(monkeypatch, path)
    yield path
    get_settings.cache_clear()


def _point_at(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}")
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    get_settings.cache_clear()


def _names(path: Path) -> list[str]:
    with sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True) as db:
        return [row[0] for row in db.execute("SELECT name FROM organisations")]


def _written(names: list[str]) -> dict[int, set[str]]:
    pairs: dict[int, set[str]] = {}
    for name in names:
        if name.startswith("w-"):
            _, n, half = name.split("-")
            pairs.setdefault(int(n), set()).add(half)
    return pairs


def _wait_for(condition, what: str, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def _holder(path: Path, mode: str) -> subprocess.Popen[str]:
    process = subprocess.Popen([sys.executable, "-c", HOLDER, str(path), mode], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "ready"
    return process


def _release(process: subprocess.Popen[str]) -> int:
    out, _ = process.communicate("go\n", timeout=30)
    return int(out.strip())


class TestSqliteBackup:
    def test_a_backup_taken_while_another_process_writes_is_one_committed_state_and_restores(
            self, sqlite_database: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        stop = tmp_path / "stop"
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(sqlite_database), str(stop)])
        try:
            _wait_for(lambda: len(_written(_names(sqlite_database))) >= 50, "the writer to get going")
            backup = tmp_path / "backups" / "nightly.db"
            backup.parent.mkdir()
            made = runner.invoke(cli, ["backup", str(backup)])
            assert made.exit_code == 0, made.output
            assert f"Backed up to {backup}" in made.output
            copied = len(_written(_names(backup)))
            _wait_for(lambda: len(_written(_names(sqlite_database))) >= copied + 50, "writes after the backup")
        finally:
            stop.touch()
            writer.wait(timeout=30)
        assert writer.returncode == 0

        names = _names(backup)
        pairs = _written(names)
        # Every transaction the copy holds is whole, and it holds every one committed before the last it holds.
        assert all(halves == {"a", "b"} for halves in pairs.values())
        assert sorted(pairs) == list(range(len(pairs)))
        assert len(pairs) >= 50
        assert sum(name.startswith("seed-") for name in names) == 2000
        # A single file that stands alone: no WAL beside it, whole.
        assert not backup.with_name("nightly.db-wal").exists()
        with sqlite3.connect(backup) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

        # Restored into a fresh database, the portal's schema is current and the rows are there.
        fresh = tmp_path / "fresh" / "ahead.db"
        _point_at(monkeypatch, fresh)
        restored = runner.invoke(cli, ["restore", str(backup)])
        assert restored.exit_code == 0, restored.output
        assert f"schema {head_revision()}" in restored.output
        assert "ahead migrate" not in restored.output
        with sqlite3.connect(fresh) as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert sorted(_names(fresh)) == sorted(names)
        assert runner.invoke(cli, ["migrate"]).exit_code == 0

    def test_a_backup_waits_for_no_writer_and_leaves_out_what_is_not_committed(
            self, sqlite_database: Path, tmp_path: Path) -> None:
        writer = _holder(sqlite_database, "hold-write")  # holds the database's write lock meanwhile
        try:
            started = time.monotonic()
            made = runner.invoke(cli, ["backup", str(tmp_path / "copy.db")])
            took = time.monotonic() - started
        finally:
            _release(writer)
        assert made.exit_code == 0, made.output
        assert took < 10
        assert "uncommitted" not in _names(tmp_path / "copy.db")
        assert "uncommitted" in _names(sqlite_database)  # committed after the backup: the next one has it

    def test_a_backup_never_replaces_a_file_unless_told(self, sqlite_database: Path, tmp_path: Path) -> None:
        existing = tmp_path / "keep.db"
        existing.write_text("yesterday's backup")
        refused = runner.invoke(cli, ["backup", str(existing)])
        assert refused.exit_code == 1
        assert "exists already" in refused.output
        assert existing.read_text() == "yesterday's backup"
        assert runner.invoke(cli, ["backup", str(existing), "--force"]).exit_code == 0
        assert len(_names(existing)) == 2000

    def test_a_place_it_cannot_write_to_is_one_line_saying_so(self, sqlite_database: Path, tmp_path: Path) -> None:
        """A walk-through: a directory (with --force too), a file where a directory should be and /proc printed
        Python's tracebacks."""
        (tmp_path / "a-directory").mkdir()
        (tmp_path / "a-file").write_text("not a directory")
        fifo = tmp_path / "a-fifo"
        os.mkfifo(fifo)
        for args, says in ((["backup", str(tmp_path / "a-directory")], "is a directory"),
                           (["backup", str(tmp_path / "a-directory"), "--force"], "is a directory"),
                           (["backup", str(tmp_path / "a-file" / "x.db")], "a-file is not a directory"),
                           (["backup", "/proc/ahead-backup.db"], "Cannot write"),
                           # a typo's folders were made, at / too (a walk-through); the default place is made
                           (["backup", str(tmp_path / "no-such" / "folder" / "x.db")], "There is no directory"),
                           (["backup", str(tmp_path / "no-such") + "/"], "names a directory"),
                           (["backup", str(tmp_path / "a-directory") + "/"], "names a directory"),
                           (["backup", str(tmp_path / ("a" * 300 + ".db"))], "File name too long"),
                           # a device or a FIFO was replaced by the dump with --force (a walk-through: /dev/full)
                           (["backup", str(fifo), "--force"], "is not a regular file"),
                           (["backup", "/dev/null", "--force"], "is not a regular file")):
            refused = runner.invoke(cli, args)
            assert refused.exit_code == 1, (args, refused.output)
            assert says in refused.output and "Traceback" not in refused.output, (args, refused.output)
            assert len(refused.output.strip().splitlines()) == 1, refused.output
        assert (tmp_path / "a-directory").is_dir() and not any((tmp_path / "a-directory").iterdir())
        assert (tmp_path / "a-file").read_text() == "not a directory"
        assert fifo.is_fifo() and Path("/dev/null").is_char_device()
        assert not (tmp_path / "no-such").exists()

    def test_a_database_without_the_schema_is_refused_and_nothing_is_written(
            self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A walk-through: run without DATABASE_URL, backup copied the empty default file and said it had backed up;
        restore then refused the copy."""
        empty = tmp_path / "data" / "ahead.db"
        empty.parent.mkdir()
        sqlite3.connect(empty).close()
        _point_at(monkeypatch, empty)
        (tmp_path / "out").mkdir()
        try:
            refused = runner.invoke(cli, ["backup", str(tmp_path / "out" / "backup.db")])
            beside = runner.invoke(cli, ["backup"])
        finally:
            get_settings.cache_clear()
        for answer in (refused, beside):
            assert answer.exit_code == 1, answer.output
            assert "is not an Ahead database" in answer.output and "Traceback" not in answer.output
        assert not any((tmp_path / "out").iterdir())  # no backup, no partial file
        assert not any((empty.parent / "backups").iterdir())

    def test_without_a_path_it_goes_beside_the_database(self, sqlite_database: Path) -> None:
        made = runner.invoke(cli, ["backup"])
        assert made.exit_code == 0, made.output
        [backup] = (sqlite_database.parent / "backups").glob("ahead-*.db")
        assert str(backup) in made.output
        # It holds every address, password hash and session: its owner's only, whatever the umask
        assert backup.stat().st_mode & 0o777 == 0o600


class TestSqliteRestore:
    @pytest.fixture
    def backup(self, sqlite_database: Path, tmp_path: Path) -> Path:
        path = tmp_path / "backup.db"
        assert runner.invoke(cli, ["backup", str(path)]).exit_code == 0
        with sqlite3.connect(sqlite_database) as db:  # what happens after the backup, to be undone by restoring
            db.execute("INSERT INTO organisations (name, revenue, created_at) VALUES ('later', 0, '2026-01-02')")
        return path

    def test_it_refuses_while_a_server_has_the_database_open_unless_forced(
            self, sqlite_database: Path, backup: Path) -> None:
        server = _holder(sqlite_database, "read")
        try:
            refused = runner.invoke(cli, ["restore", str(backup)])
            assert refused.exit_code == 1
            assert "open in another process" in refused.output and "--force" in refused.output
            assert "later" in _names(sqlite_database)  # untouched

            forced = runner.invoke(cli, ["restore", str(backup), "--force"])
            assert forced.exit_code == 0, forced.output
        finally:
            seen_by_server = _release(server)
        # The server's open connection reads the restored database, not a mix of the two files.
        assert seen_by_server == 2000
        assert "later" not in _names(sqlite_database)

    def test_once_the_server_stopped_it_restores(self, sqlite_database: Path, backup: Path) -> None:
        _release(_holder(sqlite_database, "read"))
        restored = runner.invoke(cli, ["restore", str(backup)])
        assert restored.exit_code == 0, restored.output
        assert len(_names(sqlite_database)) == 2000

    def test_it_restores_only_a_whole_ahead_database_this_release_knows(
            self, sqlite_database: Path, backup: Path, tmp_path: Path) -> None:
        not_sqlite = tmp_path / "notes.txt"
        not_sqlite.write_text("not a database " * 100)
        other = tmp_path / "other.db"
        with sqlite3.connect(other) as db:
            db.execute("CREATE TABLE t (x)")
        newer = tmp_path / "newer.db"
        newer.write_bytes(backup.read_bytes())
        with sqlite3.connect(newer) as db:
            db.execute("UPDATE alembic_version SET version_num = 'from_the_future'")
        for path, reason in ((not_sqlite, "is not a SQLite database"), (other, "is not an Ahead database"),
                             (newer, "made by a newer release"), (tmp_path / "missing.db", "There is no file")):
            refused = runner.invoke(cli, ["restore", str(path)])
            assert refused.exit_code == 1, path
            assert reason in refused.output
        assert "later" in _names(sqlite_database)  # nothing was restored

    def test_a_backup_from_an_older_release_is_restored_and_said_to_need_migrating(
            self, sqlite_database: Path, backup: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from app.migrate import known_revisions

        older = tmp_path / "older.db"
        older.write_bytes(backup.read_bytes())
        with sqlite3.connect(older) as db:  # as a backup made before this release's last migration says
            db.execute("UPDATE alembic_version SET version_num = ?",
                       (next(r for r in known_revisions() if r != head_revision()),))
        fresh = tmp_path / "fresh.db"
        _point_at(monkeypatch, fresh)
        restored = runner.invoke(cli, ["restore", str(older)])
        assert restored.exit_code == 0, restored.output
        assert "run `ahead migrate`" in restored.output


def test_on_postgresql_backup_is_a_pg_dump_and_restore_points_at_pg_restore(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if server_url() is None:
        pytest.skip("runs in the PostgreSQL pass (DATABASE_URL=postgresql://…)")
    with cli_database(tmp_path, monkeypatch, "backup"):
        dump = tmp_path / "ahead.dump"
        made = runner.invoke(cli, ["backup", str(dump)])
        assert made.exit_code == 0, made.output
        assert dump.read_bytes().startswith(b"PGDMP")  # pg_dump's custom format
        assert dump.stat().st_mode & 0o777 == 0o600
        listing = subprocess.run(["pg_restore", "--list", str(dump)], capture_output=True, text=True, check=True)
        assert "TABLE public organisations" in listing.stdout
        again = runner.invoke(cli, ["restore", str(dump)])
        assert again.exit_code == 2
        assert "pg_restore --clean --if-exists" in again.output
        missing = runner.invoke(cli, ["restore", str(tmp_path / "no-such.dump")])
        assert missing.exit_code == 1 and "There is no backup at" in missing.output


def test_on_postgresql_restore_refuses_a_sqlite_backup_and_a_file_no_backup_made(
        migrated: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It printed the pg_restore command for a SQLite file, which pg_restore cannot read (a walk-through). No
    PostgreSQL server is needed: restore on PostgreSQL only says what to do."""
    monkeypatch.setenv("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/ahead_nowhere")
    monkeypatch.setenv("SECRET_KEY", "cli-test-secret-" + "y" * 32)
    get_settings.cache_clear()
    try:
        sqlite_backup = runner.invoke(cli, ["restore", str(migrated)])
        assert sqlite_backup.exit_code == 1
        assert "is a SQLite backup, and DATABASE_URL names a PostgreSQL database" in sqlite_backup.output
        assert "pg_restore" not in sqlite_backup.output
        other = tmp_path / "notes.txt"
        other.write_text("not a backup")
        refused = runner.invoke(cli, ["restore", str(other)])
        assert refused.exit_code == 1 and "is not a backup `ahead backup` made on PostgreSQL" in refused.output
        dump = tmp_path / "ahead.dump"
        dump.write_bytes(b"PGDMP\x01\x0e\x00" + b"\x00" * 64)  # how pg_dump's custom format begins
        pointed = runner.invoke(cli, ["restore", str(dump)])
        assert pointed.exit_code == 2 and "pg_restore --clean --if-exists" in pointed.output
    finally:
        get_settings.cache_clear()
