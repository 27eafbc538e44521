"""/healthz (the process answers), /readyz (each dependency, with its state), and what /metrics reads from the
database at each scrape (app/metrics.py counts the rest)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import text

from app import migrate
from app.db import Database
from app.outbox import service as outbox

log = logging.getLogger("ahead.metrics")

router = APIRouter(include_in_schema=False)


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers; touches nothing else."""
    return {"status": "ok"}


def _check(state: str, detail: str) -> dict[str, str]:
    return {"state": state, "detail": detail}


def _database_checks(request: Request) -> dict[str, dict[str, str]]:
    """A write the database must accept (an UPDATE that changes nothing, in a savepoint rolled back at once:
    a read-only or full-locked database fails it where a SELECT would pass), then the schema's revision."""
    session = request.state.db.session
    try:
        savepoint = session.begin_nested()
        try:
            session.execute(text("UPDATE alembic_version SET version_num = version_num"))
        finally:
            savepoint.rollback()
    except Exception as exc:  # any failure means "cannot write"
        return {"database": _check("fail", f"cannot write: {type(exc).__name__}"),
                "migrations": _check("fail", "not checked: the database failed")}
    database = _check("ok", "writable (" + session.get_bind().dialect.name + ")")
    current, head = migrate.current_revision(session.connection()), migrate.head_revision()
    if current == head:
        return {"database": database, "migrations": _check("ok", f"at head {head}")}
    if current is not None and current not in migrate.known_revisions():
        # A rolling upgrade: the next release ran its migrations (written to keep this release working) before
        # its instances start. This instance keeps serving until it is replaced; failing here would take every
        # instance of this release out of the proxy's rotation at once.
        return {"database": database,
                "migrations": _check("newer", f"at {current}, which a newer release made (this one's head is "
                                              f"{head}): replace this instance with the new release")}
    return {"database": database,
            "migrations": _check("fail", f"at {current or 'none'}, expected {head}: run `ahead migrate`")}


def _mail_check(settings: Any) -> dict[str, str]:
    """From the settings only: a probe must not open an SMTP connection every few seconds."""
    if not settings.smtp_url:
        return _check("log", "no SMTP_URL: emails are printed to the log")
    host = urlsplit(settings.smtp_url).hostname or "?"
    return _check("smtp", f"sent through {host} (not contacted by this check)")


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 with "ok" or "degraded" (a fallback is in use, or a newer release migrated the database),
    503 with "fail" (do not send traffic)."""
    checks = _database_checks(request)
    limits = request.app.state.limiter.state()
    checks["rate_limits"] = _check(limits.state, limits.detail)
    checks["mail"] = _mail_check(request.app.state.settings)
    if any(check["state"] == "fail" for check in checks.values()):
        status, code = "fail", 503
    elif limits.state == "degraded" or checks["migrations"]["state"] == "newer":
        status, code = "degraded", 200
    else:
        status, code = "ok", 200
    return JSONResponse({"status": status, "checks": checks}, status_code=code,
                        headers={"cache-control": "no-store"})


class OutboxDepth(Collector):
    """The outbox's depth, read at each scrape: the same for every process, so read once by the one answering
    (prometheus_client's multiprocess mode cannot add up a custom collector's values anyway)."""

    def __init__(self, database: Database) -> None:
        self.database = database

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("ahead_database_up", "Whether the database answered this scrape's query.")
        try:
            with self.database.new_session(write=False) as session:
                depth = outbox.depth(session)
        except Exception as exc:  # a scrape still reports the requests; this says why the rest is missing
            log.warning("/metrics: the outbox could not be read: %s", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        jobs = GaugeMetricFamily("ahead_outbox_jobs", "Outbox jobs (email, webhooks) not delivered: pending (of them "
                                 "due: due now), failed (retries used up, see `ahead outbox`), dead (given up).",
                                 labels=["state"])
        for state in ("pending", "due", "failed", "dead"):
            jobs.add_metric([state], getattr(depth, state))
        yield jobs
        yield GaugeMetricFamily("ahead_outbox_oldest_due_seconds", "How long the longest-waiting due outbox job has "
                                "been due (0: none is): delivery running behind.", value=depth.oldest_due_seconds)
