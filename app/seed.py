"""Demo data: a believable software company's roadmap (`ahead seed --demo`)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from app.roadmap.models import Item


def is_empty(session: Session) -> bool:
    return not session.scalar(select(func.count()).select_from(Item))


def seed_demo(session: Session) -> str:
    return "Demo data: not written yet."
