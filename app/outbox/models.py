"""The outbox's one table: a job per delivery (an email, a webhook call, a fan-out step)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.db import Base, UTCDateTime, str_enum, utcnow


class JobState(StrEnum):
    pending = "pending"  # waiting for its next attempt (next_attempt_at), or being run (claimed_by)
    done = "done"
    failed = "failed"  # can never succeed (a handler raised Failed): no more attempts
    dead = "dead"  # its retry schedule is used up


class OutboxJob(Base):
    """One job. `key` makes enqueueing idempotent: a second job with the same key is not added.

    Claiming: a worker sets `claimed_by` and `claimed_until` (its lease) on the pending jobs it takes, in one
    short transaction (PostgreSQL: FOR UPDATE SKIP LOCKED, so workers never wait for one another); a job whose
    lease has run out (its worker died) is taken again by the next worker that looks.
    """

    __tablename__ = "outbox_jobs"
    __table_args__ = (
        Index("ix_outbox_jobs_due", "state", "next_attempt_at"),
        Index("ix_outbox_jobs_finished", "finished_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    kind: Mapped[str] = mapped_column(String(60))
    payload: Mapped[dict[str, Any]] = mapped_column(JSON)
    key: Mapped[str] = mapped_column(String(200), unique=True)
    state: Mapped[JobState] = mapped_column(str_enum(JobState, 10), default=JobState.pending)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_error: Mapped[str] = mapped_column(Text, default="")  # why the last failed attempt failed
    result: Mapped[str] = mapped_column(Text, default="")  # what the attempt that succeeded got (an SMTP answer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    claimed_by: Mapped[str | None] = mapped_column(String(120))
    claimed_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
