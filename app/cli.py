"""The `ahead` command: serve, worker, outbox, migrate, seed, create-admin, reset-password, reconcile, desk-check,
backup, restore."""

from __future__ import annotations

import asyncio
import getpass
import signal
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer
from pydantic import ValidationError

from app import backup as backups
from app import handlers, logs, metrics, revision
from app import seed as seeding
from app.accounts import passwords
from app.accounts import service as accounts
from app.accounts.models import Role
from app.config import get_settings
from app.db import Database
from app.desk import service as desk
from app.errors import AppError, FormInvalid
from app.migrate import current_revision, head_revision, upgrade
from app.outbox import service as outbox_service
from app.outbox.models import JobState
from app.outbox.worker import Worker, wake_on_commit
from app.roadmap import search
from app.serving import raise_file_limit
from app.voting import service as voting

cli = typer.Typer(help="Ahead: a self-hosted product roadmap portal.", no_args_is_help=True, add_completion=False,
                  pretty_exceptions_enable=False)


def _database() -> Database:
    """The database for a command: the requests' lock timeout (nothing in the app holds a lock longer, and a
    command waiting on one may itself hold locks that requests wait for), but its own statement timeout,
    none by default: an export or an import reads or writes every row in one go."""
    settings = get_settings()
    _require_schema(settings.database_url)
    database = Database(settings.database_url, lock_timeout=settings.db_lock_timeout,
                        statement_timeout=settings.db_maintenance_statement_timeout or None)
    revision.track(database)  # what a command changes shows at once in every worker
    wake_on_commit(database)  # and what it enqueues wakes a worker of this process (`ahead worker`) at once
    return database


def _require_schema(database_url: str) -> None:
    """Stop a command, with what to do, when its database holds no Ahead schema: run without DATABASE_URL (the
    default SQLite file) or before `ahead migrate`, a command printed a traceback from its first query and left an
    empty database file behind (a walk-through). Asked on a plain engine of its own: the app's engine would put a
    SQLite file in WAL mode, and a file that is not there is not made."""
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    url = make_url(database_url)
    path = url.database if url.get_backend_name() == "sqlite" else None
    if path and path != ":memory:" and not Path(path).exists():
        found = None
    else:
        engine = create_engine(url)
        try:
            with engine.connect() as connection:
                found = current_revision(connection)
        finally:
            engine.dispose()
    if found is None:
        typer.echo(f"The database {url.render_as_string(hide_password=True)} holds no Ahead schema: run `ahead "
                   "migrate` first (or set DATABASE_URL to the portal's database).", err=True)
        raise typer.Exit(1)


def _ensure_sqlite_dir() -> None:
    settings = get_settings()
    if settings.is_sqlite:
        from pathlib import Path

        from sqlalchemy.engine import make_url

        database = make_url(settings.database_url).database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)


WORKER_HEALTHCHECK_SECONDS = 60
SERVING_LOOP = "app.serving:new_event_loop"


@cli.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="Address to listen on (0.0.0.0 in a container)."),
    port: int = typer.Option(None, help="Port (default: PORT, or 8000)."),
    workers: int = typer.Option(None, help="Worker processes (default: WORKERS, or 2)."),
    reload: bool = typer.Option(False, help="Reload on code changes (development)."),
) -> None:
    """Serve the portal with uvicorn."""
    import uvicorn

    settings = get_settings()
    _ensure_sqlite_dir()
    if port:
        # The app is built in each worker from the environment: BASE_URL's default follows PORT.
        import os

        os.environ["PORT"] = str(port)
    processes = 1 if reload else (workers or settings.workers)
    raise_file_limit()  # each connection holds a file: the workers inherit the limit
    with _shared_metrics(processes > 1 and settings.metrics_enabled):
        uvicorn.run(
            "app.main:create_app",
            factory=True,
            host=host,
            port=port or settings.port,
            workers=None if reload else processes,
            reload=reload,
            # X-Forwarded-* are for TRUSTED_PROXIES to vouch for (app/perimeter.py); uvicorn would otherwise believe
            # them from 127.0.0.1, a local proxy or not.
            proxy_headers=False,
            timeout_keep_alive=settings.keep_alive_seconds,  # the proxy in front closes idle connections, not us
            # uvicorn's supervisor pings each worker and replaces one that does not answer within this many
            # seconds (5 by default). A worker importing the app on a busy machine (25 s seen at load 13 on 2
            # cores) missed the ping, was killed and started again, and the portal never served.
            timeout_worker_healthcheck=WORKER_HEALTHCHECK_SECONDS,
            # uvloop, with waiting connections taken in a few per turn of the loop (app/serving.py): uvloop's own
            # accept takes one per turn of a busy loop, and a burst of new visitors waited seconds to get in.
            loop=SERVING_LOOP,
            log_level="info",
            access_log=settings.access_log,  # off unless ACCESS_LOG: the proxy logs each request (app/config.py)
        )


@contextmanager
def _shared_metrics(needed: bool) -> Iterator[None]:
    """With several worker processes, the directory where each writes its metrics for /metrics to add up
    (app/metrics.py): PROMETHEUS_MULTIPROC_DIR emptied of an earlier run's files, or else a fresh one, removed
    afterwards. Set in the environment before the workers start, so that they inherit it."""
    import os
    import shutil
    import tempfile

    if not needed:
        yield
        return
    given = os.environ.get(metrics.MULTIPROCESS_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        metrics.reset_directory(given)
        yield
        return
    directory = tempfile.mkdtemp(prefix="ahead-metrics-")
    os.environ[metrics.MULTIPROCESS_ENV] = directory
    try:
        yield
    finally:
        # Out of the environment too: a process started after this one served (a test's) must not write there.
        os.environ.pop(metrics.MULTIPROCESS_ENV, None)
        shutil.rmtree(directory, ignore_errors=True)


@cli.command()
def migrate() -> None:
    """Bring the database schema up to date."""
    _ensure_sqlite_dir()
    upgrade(get_settings().database_url)
    typer.echo("Database is up to date.")


@cli.command()
def seed(
    demo: bool = typer.Option(False, "--demo", help="Load the demo company's roadmap."),
    if_empty: bool = typer.Option(False, "--if-empty", help="Only when the database has no items yet."),
) -> None:
    """Load demo data."""
    if not demo:
        typer.echo("Nothing to do: pass --demo to load the demo company's roadmap.")
        raise typer.Exit(0)
    database = _database()
    try:
        with database.transaction() as session:
            if if_empty and not seeding.is_empty(session):
                typer.echo("The database already has items; demo data not loaded.")
                return
            summary = seeding.seed_demo(session)
        typer.echo(summary)
    finally:
        database.dispose()


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Password again: "):
            typer.echo("The two passwords differ.", err=True)
            raise typer.Exit(1)
        return first
    return sys.stdin.readline().rstrip("\n")


def _new_password_hash() -> str:
    """A password from standard input, checked and hashed (before any transaction: argon2 takes its time,
    and a write transaction would hold SQLite's lock meanwhile); exit 1 with the reason if it is too weak."""
    password = _read_password()
    try:
        accounts.check_password_strength(password)
    except FormInvalid as exc:
        typer.echo("; ".join(exc.errors.values()), err=True)
        raise typer.Exit(1) from None
    return passwords.hash_password_blocking(password)


@cli.command("create-admin")
def create_admin(email: str, name: str = typer.Option("", help="Display name.")) -> None:
    """Create an admin account; the password is read from standard input."""
    database = _database()  # a database without the schema is refused before the password is asked for
    try:
        password_hash = _new_password_hash()
        with database.transaction() as session:
            user = accounts.create_user(session, email=email, role=Role.admin, password_hash=password_hash,
                                        display_name=name)
            typer.echo(f"Admin {user.email} created. Sign in at {get_settings().base_url}/login")
    except FormInvalid as exc:
        typer.echo("; ".join(exc.errors.values()), err=True)
        raise typer.Exit(1) from None
    except AppError as exc:
        typer.echo(exc.detail, err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()


@cli.command("reset-password")
def reset_password(email: str) -> None:
    """Set a new password for a locked-out user (read from standard input); ends their sessions."""
    database = _database()  # a database without the schema is refused before the password is asked for
    try:
        password_hash = _new_password_hash()
        with database.transaction() as session:
            user = accounts.get_user_by_email(session, email)
            if user is None:
                typer.echo(f"No user with the email {email}.", err=True)
                raise typer.Exit(1)
            accounts.set_password(session, user=user, password_hash=password_hash)
            typer.echo(f"Password of {user.email} changed; their other sessions are ended.")
    except FormInvalid as exc:
        typer.echo("; ".join(exc.errors.values()), err=True)
        raise typer.Exit(1) from None
    finally:
        database.dispose()


# Items someone else was changing when reconcile reached them are tried again, a few times, after a pause:
# a vote holds its item for milliseconds, a merge for about a second.
BUSY_RETRIES = 3
BUSY_PAUSE_SECONDS = 1.0


@cli.command()
def reconcile(
    batch_size: int = typer.Option(500, min=1, max=5000, help="Items per transaction."),
) -> None:
    """Check every item's vote count against its vote rows, fix any that drifted, refresh trend counts.

    Works through the items in batches, one short transaction each, so votes on other items never wait for
    it; an item being changed at that moment is skipped and tried again. Exit code 0 when every counter was
    right, 1 when drifts were found (and fixed), 3 when some items could not be checked (run it again).
    """
    import time

    drifts: list[voting.Drift] = []
    busy: dict[int, str] = {}
    database = _database()
    try:
        after = 0
        while True:
            with database.transaction() as session:
                ids = voting.item_ids(session, after_id=after, limit=batch_size)
                if not ids:
                    break
                checked = voting.reconcile_items(session, ids=ids, skip_locked=True)
            drifts += checked.drifts
            busy.update(checked.busy)
            after = ids[-1]
        for _ in range(BUSY_RETRIES):
            if not busy:
                break
            time.sleep(BUSY_PAUSE_SECONDS)
            waiting, busy = sorted(busy), {}
            for start in range(0, len(waiting), batch_size):
                with database.transaction() as session:
                    checked = voting.reconcile_items(session, ids=waiting[start:start + batch_size],
                                                     skip_locked=True)
                drifts += checked.drifts
                busy.update(checked.busy)
    finally:
        database.dispose()
    for drift in drifts:
        typer.echo(f"item {drift.public_id}: vote_count was {drift.stored}, {drift.actual} vote rows; fixed")
    if drifts:
        typer.echo(f"{len(drifts)} vote count{'' if len(drifts) == 1 else 's'} fixed; trend counts refreshed.")
    else:
        typer.echo("Every vote count matches its vote rows; trend counts refreshed.")
    if busy:
        typer.echo(f"{len(busy)} item{' was' if len(busy) == 1 else 's were'} being changed while reconcile ran "
                   f"and {'was' if len(busy) == 1 else 'were'} not checked: {', '.join(sorted(busy.values()))}. "
                   "Run `ahead reconcile` again.")
        raise typer.Exit(3)
    if drifts:
        raise typer.Exit(1)


@cli.command()
def reindex(
    batch_size: int = typer.Option(500, min=1, max=5000, help="Items per transaction."),
) -> None:
    """Rebuild the search index from every item's title, summary and description as they are now.

    The app keeps the index as it changes items; text changed with SQL by hand is found under its old words until
    this runs. One short transaction per batch of items, so the portal keeps serving meanwhile; each moves the
    content revision, so the search pages the workers kept follow at once.
    """
    database = _database()
    indexed, after = 0, 0
    try:
        while True:
            with database.transaction() as session:
                done = search.index_next(session.connection(), after_id=after, limit=batch_size)
                if done is None:
                    dropped = search.drop_missing(session.connection())
                    break
            indexed, after = indexed + done[0], done[1]
    finally:
        database.dispose()
    gone = f"; {dropped:,} entr{'y' if dropped == 1 else 'ies'} of deleted items dropped" if dropped else ""
    typer.echo(f"Search index rebuilt: {indexed:,} item{'' if indexed == 1 else 's'}{gone}.")


@cli.command("desk-check")
def desk_check(
    fix: bool = typer.Option(False, "--fix", help="Count the aggregates again from the vote rows if they differ."),
) -> None:
    """Recount the prioritisation desk's aggregates from the vote rows and compare them with what is kept.

    Moves the windows forward to today first. Exit code 0 when every aggregate equals the recount, 1 when some
    differ (with --fix they are then counted again, in one transaction).
    """
    database = _database()
    try:
        with database.transaction() as session:
            desk.advance_windows(session)
        with database.transaction() as session:
            differences = desk.check_aggregates(session)
            for difference in differences[:50]:
                typer.echo(f"{difference.table} {difference.key}: kept {difference.stored}, "
                           f"recounted {difference.recounted}")
            if differences and fix:
                desk.rebuild_aggregates(session)
    finally:
        database.dispose()
    if not differences:
        typer.echo("The desk's aggregates equal a recount from the vote rows.")
        return
    typer.echo(f"{len(differences)} aggregate row{'' if len(differences) == 1 else 's'} differed from the recount"
               + ("; counted again from the vote rows." if fix else ". Run `ahead desk-check --fix` to count them again."))
    raise typer.Exit(1)


@cli.command()
def worker(
    batch_size: int = typer.Option(None, min=1, max=5000, help="Jobs claimed at a time (default: OUTBOX_BATCH_SIZE)."),
) -> None:
    """Run an outbox delivery worker until stopped (Ctrl-C or SIGTERM finish the message in hand).

    `ahead serve` runs one in each web process already (OUTBOX_WORKER); run more here or on other machines
    against the same database. On PostgreSQL they share the work; on SQLite one is enough."""
    logs.configure()
    handlers.load()
    settings = get_settings()
    if batch_size:
        settings = settings.model_copy(update={"outbox_batch_size": batch_size})
    database = _database()

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for number in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(number, stop.set)
        await Worker(database, settings).run_forever(stop)

    try:
        asyncio.run(run())
    finally:
        database.dispose()


@cli.command()
def outbox(
    retry: bool = typer.Option(False, "--retry", help="Put failed and dead jobs back in the queue, due now "
                               "(with --id: only those)."),
    job_id: list[int] | None = typer.Option(None, "--id", help="A job to retry (repeat for more)."),  # noqa: B008 # typer's way for a list
    limit: int = typer.Option(20, min=1, max=1000, help="How many failed and waiting jobs to list."),
) -> None:
    """Show what the outbox holds: waiting, failed and dead jobs with the reason; --retry sends them again."""
    database = _database()
    try:
        with database.transaction() as session:
            if retry:
                count = outbox_service.retry(session, job_ids=list(job_id) if job_id else None)
                typer.echo(f"{count:,} job{'' if count == 1 else 's'} queued again.")
                return
            counts = outbox_service.counts(session)
            typer.echo(f"Waiting: {counts.pending} ({counts.due} due now). Failed: {counts.failed}. "
                       f"Dead: {counts.dead}. Done in the last 24 hours: {counts.done_last_day}.")
            jobs = outbox_service.recent(session, states=(JobState.pending, JobState.failed, JobState.dead),
                                         limit=limit)
            for job in jobs:
                to = f" to {job.payload.get('to')}" if job.kind == outbox_service.EMAIL_KIND else ""
                when = (f"next attempt {job.next_attempt_at:%Y-%m-%d %H:%M:%S} UTC" if job.state is JobState.pending
                        else f"since {job.finished_at:%Y-%m-%d %H:%M:%S} UTC" if job.finished_at else "")
                typer.echo(f"#{job.id} {job.state.value} {job.kind}{to} ({job.key}), {job.attempts} attempt(s), "
                           f"{when}" + (f": {job.last_error}" if job.last_error else ""))
            if counts.failed or counts.dead:
                typer.echo("Send them again with `ahead outbox --retry` (or --retry --id N).")
    finally:
        database.dispose()


def _size(size: int) -> str:
    return f"{size / (1024 * 1024):.1f} MiB" if size >= 1024 * 1024 else f"{size / 1024:.0f} KiB"


@cli.command()
def backup(
    given: str | None = typer.Argument(None, metavar="PATH", help="Where to write it (default: backups/ beside a "
                                       "SQLite database, or ./ahead-<time>.dump for PostgreSQL)."),
    force: bool = typer.Option(False, "--force", help="Replace the file if it exists."),
) -> None:
    """Back up the database while the portal keeps serving.

    SQLite: a consistent copy through SQLite's online backup API, checked, as one self-contained file.
    PostgreSQL: pg_dump's custom format (restore it with pg_restore; docs/deploy.md), if pg_dump is installed.
    """
    from datetime import UTC, datetime

    if given is not None and given.endswith("/"):  # a directory's name (Path would drop the slash and write a file)
        typer.echo(f"{given} names a directory; give the backup's file name (in it, or elsewhere)", err=True)
        raise typer.Exit(1)
    path = Path(given) if given is not None else None
    settings = get_settings()
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    try:
        if settings.is_sqlite:
            database = backups.sqlite_path(settings.database_url)
            copied = backups.backup_sqlite(settings.database_url,
                                           path or database.parent / "backups" / f"ahead-{stamp}.db", overwrite=force,
                                           make_directory=path is None)
        else:
            copied = backups.pg_dump(settings.database_url, path or Path(f"ahead-{stamp}.dump"), overwrite=force)
    except backups.BackupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    schema = f", schema {copied.revision}" if copied.revision else ""
    typer.echo(f"Backed up to {copied.path} ({_size(copied.size)}{schema}).")


@cli.command()
def restore(
    path: Path = typer.Argument(..., help="A backup made by `ahead backup` (SQLite)."),  # noqa: B008 # typer's way
    force: bool = typer.Option(False, "--force", help="Restore even while a server or worker has the database "
                               "open (restart them right after)."),
) -> None:
    """Restore a SQLite backup into DATABASE_URL's database (made if missing), replacing all it holds.

    Refused while another process (`ahead serve`, `ahead worker`) has the database open, unless --force.
    A backup from an older release is restored as it is: run `ahead migrate` afterwards. PostgreSQL: use
    pg_restore (the command is printed).
    """
    settings = get_settings()
    if not settings.is_sqlite:
        if not path.is_file():
            typer.echo(f"There is no backup at {path}.", err=True)
            raise typer.Exit(1)
        kind = backups.kind_of(path)
        if kind == "sqlite":
            typer.echo(f"{path} is a SQLite backup, and DATABASE_URL names a PostgreSQL database: `ahead restore` "
                       "puts a SQLite backup back into a SQLite database (set DATABASE_URL to its file). Moving a "
                       "portal's data from SQLite to PostgreSQL is not something Ahead does.", err=True)
            raise typer.Exit(1)
        if kind != "pg_dump":
            typer.echo(f"{path} is not a backup `ahead backup` made on PostgreSQL (pg_dump's custom format).", err=True)
            raise typer.Exit(1)
        typer.echo("On PostgreSQL, restore a dump made by `ahead backup` (pg_dump) with pg_restore, the servers "
                   "stopped, e.g.:\n  pg_restore --clean --if-exists --no-owner --dbname=postgresql://USER@HOST/DB "
                   f"{path}\nthen run `ahead migrate`.", err=True)
        raise typer.Exit(2)
    try:
        restored = backups.restore_sqlite(settings.database_url, path, force=force)
    except backups.BackupError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(1) from None
    typer.echo(f"Restored {path} into {restored.path} ({_size(restored.size)}, schema {restored.revision}).")
    if restored.revision != head_revision():
        typer.echo("The backup's schema is older than this release's: run `ahead migrate` before serving.")


def main() -> None:
    try:
        cli()
    except ValidationError as exc:  # a setting missing or wrong: what to set, not a traceback
        for error in exc.errors():
            typer.echo(f"ahead: {error['msg'].removeprefix('Value error, ')}", err=True)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
