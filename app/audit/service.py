"""The audit log: every staff change, who, what, when, before → after."""

from __future__ import annotations

from typing import Any

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from app.audit.actions import AuditAction
from app.audit.models import AuditEvent


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(v) for v in value]
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if hasattr(value, "value"):
        return value.value
    return str(value)


def diff(before: dict[str, Any], after: dict[str, Any]) -> dict[str, list[Any]]:
    """The fields whose values differ, as {field: [before, after]}."""
    out: dict[str, list[Any]] = {}
    for key in sorted(set(before) | set(after)):
        b, a = _jsonable(before.get(key)), _jsonable(after.get(key))
        if b != a:
            out[key] = [b, a]
    return out


def record(
    session: Session,
    *,
    actor: Any,
    action: AuditAction,
    entity: Any = None,
    entity_type: str | None = None,
    label: str | None = None,
    changes: dict[str, list[Any]] | None = None,
) -> AuditEvent:
    if entity is not None:
        entity_type = entity_type or type(entity).__tablename__.removesuffix("s")
        entity_id = str(getattr(entity, "public_id", None) or getattr(entity, "id", None) or getattr(entity, "key", ""))
        if label is None:
            label = str(getattr(entity, "title", None) or getattr(entity, "name", None) or getattr(entity, "email", ""))
    else:
        entity_id = ""
    event = AuditEvent(
        actor_id=getattr(actor, "id", None),
        actor_label=getattr(actor, "email", "") or "system",
        action=action.value,
        entity_type=entity_type or "",
        entity_id=entity_id,
        entity_label=(label or "")[:200],
        changes={k: [_jsonable(v) for v in pair] for k, pair in (changes or {}).items()},
    )
    session.add(event)
    return event


def list_events(session: Session, *, page: int = 1, per_page: int = 50, entity_type: str = "") -> tuple[list[AuditEvent], int]:
    stmt = select(AuditEvent)
    if entity_type:
        stmt = stmt.where(AuditEvent.entity_type == entity_type)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    rows = session.scalars(
        stmt.order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc()).offset((page - 1) * per_page).limit(per_page)
    )
    return list(rows), total


def list_events_for(session: Session, *, entity: Any, limit: int = 10) -> list[AuditEvent]:
    """The latest events about one record (e.g. an item's recent changes on its edit page)."""
    entity_type = type(entity).__tablename__.removesuffix("s")
    entity_id = str(getattr(entity, "public_id", None) or getattr(entity, "id", ""))
    return list(session.scalars(
        select(AuditEvent)
        .where(AuditEvent.entity_type == entity_type, AuditEvent.entity_id == entity_id)
        .order_by(AuditEvent.created_at.desc(), AuditEvent.id.desc())
        .limit(limit)
    ))


def list_entity_types(session: Session) -> list[str]:
    """The kinds of record the log mentions, for its filter."""
    return list(session.scalars(select(AuditEvent.entity_type).distinct().order_by(AuditEvent.entity_type)))


def list_events_by_actor(session: Session, *, actor_id: int) -> list[AuditEvent]:
    """Everything one person did, oldest first (their data export)."""
    return list(session.scalars(
        select(AuditEvent).where(AuditEvent.actor_id == actor_id).order_by(AuditEvent.created_at, AuditEvent.id)
    ))


def anonymise_person(session: Session, *, user_id: int, email: str, actor_label: str, entity_label: str) -> None:
    """Take a deleted account's email and name out of the log, keeping what happened and when.

    Events they did keep their actor id and show `actor_label`; events about their user record or
    their invitation (labelled with their email) show `entity_label`, and the changes recorded on
    their user record lose the values (names, emails) that identified them.
    """
    session.execute(update(AuditEvent).where(AuditEvent.actor_id == user_id).values(actor_label=actor_label))
    about = session.scalars(select(AuditEvent).where(or_(
        and_(AuditEvent.entity_type == "user", AuditEvent.entity_id == str(user_id)),
        and_(AuditEvent.entity_type == "invitation", AuditEvent.entity_label == email),
    )))
    for event in about:
        event.entity_label = entity_label
        if event.entity_type == "user" and event.entity_id == str(user_id):
            event.changes = {k: (["(removed)", "(removed)"] if k in ("display_name", "email") else v)
                             for k, v in event.changes.items()}
