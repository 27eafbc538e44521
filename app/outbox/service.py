"""Enqueueing jobs, in the caller's transaction; what the admin page and `ahead outbox` show and retry.

`enqueue` only adds a row to the caller's session (and flushes): the job exists exactly when the change that
caused it is committed, so a rolled-back change sends nothing, and a crash after the commit loses nothing.
The commit wakes this process's worker (registry.wake), so a sign-in link goes out within a second.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import Select, func, select, update
from sqlalchemy.orm import Session

from app.addresses import validate_email
from app.db import insert_with_conflicts, utcnow
from app.errors import FormInvalid
from app.forms import FormModel, refuse, text
from app.outbox import registry
from app.outbox.models import JobState, OutboxJob

EMAIL_KIND = "email"
_WAKE = "outbox_wake"


def enqueue(session: Session, kind: str, payload: dict[str, Any], *, key: str | None = None,
            run_at: datetime | None = None) -> None:
    """Add a job to the caller's transaction (flushed, not committed). A job with the same `key` already
    queued, done or failed means this one is not added: enqueueing twice with one key does it once."""
    enqueue_many(session, kind, [(payload, key)], run_at=run_at)


def enqueue_many(session: Session, kind: str, jobs: list[tuple[dict[str, Any], str | None]], *,
                 run_at: datetime | None = None) -> None:
    """`enqueue` for many jobs of one kind in one statement (a fan-out's batch); (payload, key) each."""
    if not jobs:
        return
    now = utcnow()
    rows = [{"kind": kind, "payload": payload, "key": key or f"{kind}:{uuid.uuid4().hex}",
             "state": JobState.pending.value, "attempts": 0, "next_attempt_at": run_at or now, "last_error": "",
             "created_at": now} for payload, key in jobs]
    bind = session.get_bind()
    statement = insert_with_conflicts(bind.dialect.name, OutboxJob.__table__).on_conflict_do_nothing(
        index_elements=["key"])
    session.flush()  # what the session holds goes first, as it would with session.add
    session.execute(statement, rows)
    session.info[_WAKE] = True


def message_id(key: str, domain: str) -> str:
    """The Message-ID of the email enqueued with `key`: the same each time it is sent (after a crash, say)."""
    digest = hashlib.sha256(key.encode()).hexdigest()[:32]
    return f"<{digest}@{domain}>"


def enqueue_email(session: Session, *, to: str, template: str, context: dict[str, Any], key: str,
                  headers: dict[str, str] | None = None, run_at: datetime | None = None) -> None:
    """An email to `to`, rendered when it is sent from templates/email/<template>/ (subject.txt, body.txt,
    body.html) with `context` (JSON values only: it is stored). `key` names the message (an event and a
    recipient): enqueued again it is not sent again, and its Message-ID comes from it. `headers` are added to
    the message (List-Unsubscribe, say)."""
    enqueue_emails(session, [Email(to=to, template=template, context=context, key=key, headers=headers)],
                   run_at=run_at)


@dataclass(frozen=True, slots=True)
class Email:
    """One email for `enqueue_emails`: the arguments of `enqueue_email`."""

    to: str
    template: str
    context: dict[str, Any]
    key: str
    headers: dict[str, str] | None = None


def enqueue_emails(session: Session, emails: list[Email], *, run_at: datetime | None = None) -> None:
    """`enqueue_email` for many emails in one statement (a fan-out's batch)."""
    enqueue_many(session, EMAIL_KIND, [({"to": e.to, "template": e.template, "context": e.context,
                                         "headers": dict(e.headers or {})}, f"{EMAIL_KIND}:{e.key}")
                                       for e in emails], run_at=run_at)


def wants_wake(session: Session) -> bool:
    """Whether the session enqueued something since this was last asked (its commit should wake the worker)."""
    return bool(session.info.pop(_WAKE, False))


# --- reading and retrying (admin page, `ahead outbox`) ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class Counts:
    pending: int
    due: int  # pending and due now
    failed: int
    dead: int
    done_last_day: int


def counts(session: Session) -> Counts:
    now = utcnow()
    by_state: dict[JobState, int] = dict(session.execute(
        select(OutboxJob.state, func.count()).group_by(OutboxJob.state)).all())
    due = session.scalar(select(func.count()).select_from(OutboxJob).where(
        OutboxJob.state == JobState.pending, OutboxJob.next_attempt_at <= now)) or 0
    done = session.scalar(select(func.count()).select_from(OutboxJob).where(
        OutboxJob.state == JobState.done, OutboxJob.finished_at >= now - timedelta(days=1))) or 0
    return Counts(pending=by_state.get(JobState.pending, 0), due=due, failed=by_state.get(JobState.failed, 0),
                  dead=by_state.get(JobState.dead, 0), done_last_day=done)


@dataclass(frozen=True)
class Depth:
    """What waits in the outbox, for the operator's metrics: each count within the (state, next_attempt_at)
    index, whatever the number of delivered jobs kept."""

    pending: int
    due: int
    failed: int
    dead: int
    oldest_due_seconds: float  # how long the longest-waiting due job has been due (0: none is)


def depth(session: Session) -> Depth:
    now = utcnow()
    waiting = (JobState.pending, JobState.failed, JobState.dead)
    by_state: dict[JobState, int] = dict(session.execute(
        select(OutboxJob.state, func.count()).where(OutboxJob.state.in_(waiting)).group_by(OutboxJob.state)).all())
    due = OutboxJob.state == JobState.pending, OutboxJob.next_attempt_at <= now
    count, oldest = session.execute(
        select(func.count(), func.min(OutboxJob.next_attempt_at)).select_from(OutboxJob).where(*due)).one()
    if oldest is not None and oldest.tzinfo is None:  # SQLite keeps no offset; aggregates skip the column type
        oldest = oldest.replace(tzinfo=now.tzinfo)
    return Depth(pending=by_state.get(JobState.pending, 0), due=count or 0, failed=by_state.get(JobState.failed, 0),
                 dead=by_state.get(JobState.dead, 0),
                 oldest_due_seconds=max(0.0, (now - oldest).total_seconds()) if oldest is not None else 0.0)


def recent(session: Session, *, states: tuple[JobState, ...] | None = None, kind: str | None = None,
           problems: bool = False, limit: int = 50) -> list[OutboxJob]:
    """The latest jobs (newest activity first), of some states and a kind if given; `problems`: failed, dead,
    and pending after a failed attempt."""
    query: Select[tuple[OutboxJob]] = select(OutboxJob)
    if states:
        query = query.where(OutboxJob.state.in_(states))
    if problems:
        query = query.where(OutboxJob.state.in_((JobState.failed, JobState.dead))
                            | ((OutboxJob.state == JobState.pending) & (OutboxJob.attempts > 0)))
    if kind:
        query = query.where(OutboxJob.kind == kind)
    activity = func.coalesce(OutboxJob.finished_at, OutboxJob.next_attempt_at)
    return list(session.scalars(query.order_by(activity.desc(), OutboxJob.id.desc()).limit(limit)))


def retry(session: Session, *, job_ids: list[int] | None = None) -> int:
    """Failed and dead jobs (those of `job_ids`, or all) back to pending, due now, with a fresh schedule.
    Pending jobs waiting for a retry are made due now too. Returns how many."""
    query = update(OutboxJob).where(OutboxJob.state.in_((JobState.failed, JobState.dead, JobState.pending)))
    if job_ids is not None:
        query = query.where(OutboxJob.id.in_(job_ids))
    else:
        query = query.where((OutboxJob.state != JobState.pending) | (OutboxJob.attempts > 0))
    result = session.execute(query.values(state=JobState.pending, attempts=0, next_attempt_at=utcnow(),
                                          finished_at=None).execution_options(synchronize_session=False))
    session.info[_WAKE] = True
    return int(getattr(result, "rowcount", 0) or 0)


def job_from_row(row: OutboxJob) -> registry.Job:
    return registry.Job(id=row.id, kind=row.kind, payload=dict(row.payload or {}), key=row.key,
                        attempts=row.attempts)


def _address(value: str) -> str:
    try:
        return validate_email(value)
    except FormInvalid as exc:
        raise refuse(next(iter(exc.errors.values()))) from None


class SmtpCheck(FormModel):
    """The admin Email page's "send a test email" form."""

    to: Annotated[str, text(320, required="Enter the address to send the test email to."),
                  AfterValidator(_address)] = ""
