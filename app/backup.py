"""Backups of the SQLite database while the portal serves, and restoring one; PostgreSQL goes through pg_dump.

SQLite's online backup API copies the database page by page from inside a read transaction. Done in one
step (`pages=-1`) that transaction sees one committed state from start to end, so the copy is consistent
however busy the portal is; in WAL mode it blocks no writer meanwhile (they append to the WAL, which the
copy does not read past its snapshot). A copy made in several steps would instead start again whenever
another process writes, and might never finish on a busy portal. The copy is checked
(`PRAGMA integrity_check`) and made a single self-contained file (rollback journal, not WAL) before it
takes its name, so a backup that exists is a whole one.

Restoring writes the backup into the database through the same API (never by replacing the file, which
corrupts it for any process that has it open: its WAL and shared memory would belong to another file).
It refuses while another process has the database open (a running `ahead serve` or `ahead worker`) unless
forced: their cached pages and sessions would then describe a database that is no longer there.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess  # nosec B404 # pg_dump, with an argument list and no shell
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.engine import make_url

from app.migrate import known_revisions


def kind_of(path: Path) -> str | None:
    """What made a backup file, by its first bytes: "sqlite" (a SQLite database), "pg_dump" (pg_dump's custom
    format, what `ahead backup` makes on PostgreSQL), or None."""
    try:
        with path.open("rb") as file:
            start = file.read(16)
    except OSError:
        return None
    if start == b"SQLite format 3\x00":
        return "sqlite"
    return "pg_dump" if start.startswith(b"PGDMP") else None


class BackupError(Exception):
    """What the operator is told, as it is; the command exits non-zero."""


@dataclass(frozen=True)
class Copied:
    path: Path
    size: int
    revision: str | None


def sqlite_path(url: str) -> Path:
    database = make_url(url).database
    if not database or database == ":memory:":
        raise BackupError("DATABASE_URL names no SQLite file to back up or restore")
    return Path(database)


def _integrity(connection: sqlite3.Connection) -> str:
    rows = connection.execute("PRAGMA integrity_check").fetchall()
    return "; ".join(str(row[0]) for row in rows[:5])


def _revision(connection: sqlite3.Connection) -> str | None:
    try:
        row = connection.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.DatabaseError:
        return None
    return row[0] if row else None


def _private_file(path: Path) -> Path:
    """`path` made anew, empty, readable and writable by its owner only: a backup holds everything the portal keeps
    (email addresses, password hashes, sessions), and is written into it from the start."""
    path.unlink(missing_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    return path


def _prepared(destination: Path, *, overwrite: bool, make_directory: bool) -> tuple[Path, Path]:
    """Where a backup goes (resolved) and the private partial file it is written to first, beside it; its directory
    made only when `make_directory` (the default place, not a path someone typed: a typo made folders, at / too).
    What cannot be written is a BackupError saying why, in one line (a walk-through: a directory, a file where a
    directory should be, /proc printed tracebacks)."""
    try:
        destination = destination.resolve()
        if destination.is_dir():
            raise BackupError(f"{destination} is a directory; give the backup's file name (in it, or elsewhere)")
        if destination.exists() or destination.is_symlink():
            if not destination.is_file():  # a device, a FIFO, a socket: --force would have replaced it by the dump
                raise BackupError(f"{destination} is not a regular file; give the backup's file name")
            if not overwrite:
                raise BackupError(f"{destination} exists already; choose another name, or --force to replace it")
        for parent in reversed(destination.parents):
            if parent.exists() and not parent.is_dir():
                raise BackupError(f"Cannot write {destination}: {parent} is not a directory")
        if not make_directory and not destination.parent.is_dir():
            raise BackupError(f"There is no directory {destination.parent}; create it first, or give another path")
        destination.parent.mkdir(parents=True, exist_ok=True)
        return destination, _private_file(destination.with_name(f".{destination.name}.partial-{os.getpid()}"))
    except OSError as exc:  # a name too long, a loop of links, no permission, /proc
        raise BackupError(f"Cannot write {destination}: {exc.strerror or exc}") from None


def backup_sqlite(url: str, destination: Path, *, overwrite: bool = False, make_directory: bool = False) -> Copied:
    """A consistent copy of the SQLite database at `url`, written to `destination` (refused if it exists,
    unless `overwrite`); the portal may go on serving and writing meanwhile."""
    source_path = sqlite_path(url)
    if not source_path.exists():
        raise BackupError(f"There is no database at {source_path}")
    if destination.resolve() == source_path.resolve():
        raise BackupError("The backup cannot be the database itself")
    destination, partial = _prepared(destination, overwrite=overwrite, make_directory=make_directory)
    # Read-only: the backup can never change the database, nor take its write lock.
    source = sqlite3.connect(f"{source_path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        # An empty file (a command run without DATABASE_URL names the default one) made a "backup" that restore
        # then refused: said now, with nothing written (a walk-through).
        if _revision(source) is None:
            raise BackupError(f"{source_path} is not an Ahead database (it has no schema revision): is DATABASE_URL "
                              "set? Nothing was written")
        target = sqlite3.connect(partial)
        try:
            source.backup(target, pages=-1)  # one step: one snapshot (see the module's docstring)
            target.execute("PRAGMA journal_mode=DELETE")  # one file, no -wal or -shm beside it
            problems = _integrity(target)
            if problems != "ok":
                raise BackupError(f"The copy failed its integrity check ({problems}); nothing was written")
            revision = _revision(target)
        finally:
            target.close()
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    finally:
        source.close()
    os.replace(partial, destination)  # whole or not at all
    return Copied(destination, destination.stat().st_size, revision)


def in_use_by_another_process(path: Path) -> bool:
    """Whether another process has the SQLite database at `path` open in WAL mode (as Ahead always does).

    Every connection to a WAL database holds a shared POSIX lock on the "dead man switch" byte of its
    `-shm` file (SQLite's unix VFS, WALINDEX_LOCK_OFFSET + 8 = byte 128) for as long as it is open; SQLite
    itself asks for it exclusively to learn whether it is the only one. Our own connections do not count:
    POSIX locks of one process never conflict with each other. A server that has not yet opened its first
    connection is not seen; the outbox worker of `ahead serve` opens one within a second of starting.
    """
    import fcntl

    shm = path.with_name(path.name + "-shm")
    try:
        descriptor = os.open(shm, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 128)
    except OSError:
        return True
    else:
        fcntl.lockf(descriptor, fcntl.LOCK_UN, 1, 128)
        return False
    finally:
        os.close(descriptor)


def check_backup(backup: Path) -> str | None:
    """The backup's schema revision, once it proved whole and an Ahead database this release can migrate."""
    if not backup.is_file():
        raise BackupError(f"There is no file at {backup}")
    try:
        connection = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"{backup} cannot be opened as a SQLite database: {exc}") from None
    try:
        try:
            problems = _integrity(connection)
        except sqlite3.DatabaseError as exc:
            raise BackupError(f"{backup} is not a SQLite database: {exc}") from None
        if problems != "ok":
            raise BackupError(f"{backup} failed its integrity check ({problems}); nothing was restored")
        revision = _revision(connection)
    finally:
        connection.close()
    if revision is None:
        raise BackupError(f"{backup} is not an Ahead database (it has no schema revision)")
    if revision not in known_revisions():
        raise BackupError(f"{backup} was made by a newer release of Ahead (schema {revision}); restore it with "
                          "that release, or a later one")
    return revision


def restore_sqlite(url: str, backup: Path, *, force: bool = False) -> Copied:
    """Write `backup` into the SQLite database at `url` (made if missing); refused while another process has
    it open, unless `force`. Returns the restored database's size and schema revision."""
    revision = check_backup(backup)
    target_path = sqlite_path(url)
    if target_path.exists() and backup.resolve() == target_path.resolve():
        raise BackupError("The backup is the database itself")
    if not force and in_use_by_another_process(target_path):
        raise BackupError(f"{target_path} is open in another process (a running `ahead serve` or `ahead worker`). "
                          "Stop them first, or pass --force to restore under them (then restart them at once)")
    target_path.parent.mkdir(parents=True, exist_ok=True)
    source = sqlite3.connect(f"{backup.resolve().as_uri()}?mode=ro", uri=True)
    target = sqlite3.connect(target_path, timeout=30)
    try:
        # Taking the database's write lock, like any writer: whoever has it open sees the restored database
        # as one committed change.
        source.backup(target, pages=-1)
        target.execute("PRAGMA journal_mode=WAL")
        problems = _integrity(target)
        if problems != "ok":
            raise BackupError(f"The restored database failed its integrity check ({problems})")
    finally:
        target.close()
        source.close()
    return Copied(target_path, target_path.stat().st_size, revision)


def pg_dump(url: str, destination: Path, *, overwrite: bool = False, make_directory: bool = False) -> Copied:
    """`pg_dump --format=custom` of the PostgreSQL database at `url` into `destination` (restore it with
    pg_restore). The password goes through the environment, never the command line others can read."""
    binary = shutil.which("pg_dump")
    if binary is None:
        raise BackupError("pg_dump is not installed here. Install PostgreSQL's client tools (Debian: "
                          "postgresql-client, the server's major version or newer), or run pg_dump where they are")
    parsed = make_url(url)
    environment = dict(os.environ)
    if parsed.password:
        environment["PGPASSWORD"] = str(parsed.password)
    dsn = parsed.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    destination, partial = _prepared(destination, overwrite=overwrite, make_directory=make_directory)
    try:
        # --format=custom: compressed, and pg_restore can pick tables, run in parallel, or --clean first.
        result = subprocess.run(  # nosec B603 # a fixed binary with an argument list, no shell
            [binary, "--format=custom", "--no-owner", f"--file={partial}", f"--dbname={dsn}"],
            env=environment, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise BackupError(f"pg_dump failed: {result.stderr.strip()}")
        os.replace(partial, destination)
    finally:
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
    return Copied(destination, destination.stat().st_size, None)
