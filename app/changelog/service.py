"""The changelog: what shipped, as entries and lone released items. All SQL of the changelog lives here.

A row of the changelog is either an entry a product manager wrote (a title, notes, the released items it
groups) or a released item that no *published* entry holds, which stands by itself with its release notes:
one per item unless the team writes something. An item in a draft or scheduled entry keeps standing alone
until that entry is published. Who sees what starts from `visible_items(viewer)`: an entry is shown when it
holds no item at all or at least one released item the viewer may see, and it lists only those.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo, field_validator
from sqlalchemy import ColumnElement, Select, String, exists, func, literal, or_, select, union_all
from sqlalchemy.orm import Session, selectinload

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.changelog.models import ChangelogEntry, changelog_entry_items
from app.db import utcnow
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, choice, refuse, text, whole_number
from app.outbox import service as outbox_service
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Product, Stage
from app.roadmap.visibility import visible_items
from app.webhooks import service as webhooks

PAGE_SIZE = 20
MAIL_JOB = "changelog.mail"  # the subscribers' emails for a published entry: app/notify/changelog.py runs it
FEED_SIZE = 50
_PUBLIC_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
_entry_items = changelog_entry_items


@dataclass(slots=True)
class Release:
    """One row of the changelog: an entry, or a released item standing alone."""

    kind: str  # "entry" or "item"
    public_id: str
    title: str
    notes: str  # Markdown: the entry's notes, or the item's release notes
    summary: str  # one line, for previews; the item's summary for a lone item
    path: str
    at: datetime
    items: list[Item] = field(default_factory=list)  # what it announces that the viewer may see
    entry: ChangelogEntry | None = None

    @property
    def product_names(self) -> list[str]:
        names: list[str] = []
        if self.entry is not None and self.entry.product is not None:
            names.append(self.entry.product.name)
        for item in self.items:
            if item.product.name not in names:
                names.append(item.product.name)
        return names


# --- what a viewer may see -----------------------------------------------------------------------------


def _released(viewer: Viewer) -> Select[Item]:
    """Released items this viewer may see."""
    return (visible_items(viewer).join(Stage, Stage.id == Item.stage_id)
            .where(Stage.is_released.is_(True), Item.released_at.is_not(None)))


def _released_ids(viewer: Viewer, product: Product | None = None) -> Select[Any]:
    stmt = _released(viewer).with_only_columns(Item.id)
    return stmt.where(Item.product_id == product.id) if product is not None else stmt


def _entry_shown(viewer: Viewer, now: datetime, product: Product | None) -> ColumnElement[bool]:
    """Published, and holding no item or one the viewer may see (of `product`, when given)."""
    holds_any = exists().where(_entry_items.c.entry_id == ChangelogEntry.id)
    holds_shown = exists().where(_entry_items.c.entry_id == ChangelogEntry.id,
                                 _entry_items.c.item_id.in_(_released_ids(viewer, product)))
    published = ChangelogEntry.published_at.is_not(None) & (ChangelogEntry.published_at <= now)
    if product is None:
        return published & (~holds_any | holds_shown)
    return published & or_(holds_shown, (ChangelogEntry.product_id == product.id) & ~holds_any)


def next_publication(session: Session) -> datetime | None:
    """When the next scheduled entry is published: the changelog's pages change then by time alone (no write moves
    the content revision), so pages kept before must not be answered after it. None when nothing is scheduled."""
    return session.scalar(select(func.min(ChangelogEntry.published_at)).where(ChangelogEntry.published_at > utcnow()))


def _in_published_entry(now: datetime) -> ColumnElement[bool]:
    return exists().where(_entry_items.c.item_id == Item.id, _entry_items.c.entry_id == ChangelogEntry.id,
                          ChangelogEntry.published_at.is_not(None), ChangelogEntry.published_at <= now)


def get_product(session: Session, slug: str | None) -> Product | None:
    """The product a changelog is filtered to; NotFound for a slug no product has."""
    if not slug:
        return None
    product = session.scalar(select(Product).where(Product.slug == slug))
    if product is None:
        raise NotFound()
    return product


def list_releases(session: Session, viewer: Viewer, *, page: int = 1, per_page: int = PAGE_SIZE,
                  product: Product | None = None) -> tuple[list[Release], int]:
    """The changelog, newest first: published entries and lone released items, one page, and how many in all."""
    now = utcnow()
    entries = (select(literal("entry", String(5)).label("kind"), ChangelogEntry.id.label("id"),
                      ChangelogEntry.published_at.label("at"))
               .where(_entry_shown(viewer, now, product)))
    lone = _released(viewer).where(~_in_published_entry(now))
    if product is not None:
        lone = lone.where(Item.product_id == product.id)
    items = lone.with_only_columns(literal("item", String(5)).label("kind"), Item.id.label("id"),
                                   Item.released_at.label("at"))
    rows = union_all(entries, items).subquery()
    total = session.scalar(select(func.count()).select_from(rows)) or 0
    page_rows = session.execute(
        select(rows.c.kind, rows.c.id).order_by(rows.c.at.desc(), rows.c.kind, rows.c.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    ).all()
    entry_ids = [row.id for row in page_rows if row.kind == "entry"]
    item_ids = [row.id for row in page_rows if row.kind == "item"]
    by_entry = {e.id: e for e in _load_entries(session, entry_ids)}
    shown = _shown_items(session, viewer, entry_ids)
    by_item = {i.id: i for i in session.scalars(
        _released(viewer).where(Item.id.in_(item_ids)).options(selectinload(Item.product)))} if item_ids else {}
    out: list[Release] = []
    for row in page_rows:
        if row.kind == "entry" and row.id in by_entry:
            out.append(_entry_release(by_entry[row.id], shown.get(row.id, [])))
        elif row.kind == "item" and row.id in by_item:
            out.append(_item_release(by_item[row.id]))
    return out, total


def _load_entries(session: Session, ids: list[int]) -> list[ChangelogEntry]:
    if not ids:
        return []
    return list(session.scalars(select(ChangelogEntry).where(ChangelogEntry.id.in_(ids))
                                .options(selectinload(ChangelogEntry.product))))


def _shown_items(session: Session, viewer: Viewer, entry_ids: list[int]) -> dict[int, list[Item]]:
    """Each entry's released items the viewer may see, newest release first."""
    if not entry_ids:
        return {}
    rows = session.execute(
        _released(viewer).join(_entry_items, _entry_items.c.item_id == Item.id)
        .where(_entry_items.c.entry_id.in_(entry_ids)).add_columns(_entry_items.c.entry_id)
        .options(selectinload(Item.product)).order_by(Item.released_at.desc(), Item.id.desc())
    ).all()
    out: dict[int, list[Item]] = {}
    for item, entry_id in rows:
        out.setdefault(entry_id, []).append(item)
    return out


def _entry_release(entry: ChangelogEntry, items: list[Item]) -> Release:
    assert entry.published_at is not None
    summary = " ".join(entry.notes.split())[:200] if entry.notes else ", ".join(i.title for i in items)[:200]
    return Release(kind="entry", public_id=entry.public_id, title=entry.title, notes=entry.notes, summary=summary,
                   path=entry.path, at=entry.published_at, items=items, entry=entry)


def _item_release(item: Item) -> Release:
    assert item.released_at is not None
    return Release(kind="item", public_id=item.public_id, title=item.title, notes=item.release_notes,
                   summary=item.summary, path=item.path, at=item.released_at, items=[item])


def get_release(session: Session, viewer: Viewer, public_id: str) -> Release:
    """A published entry this viewer may see, or NotFound (the same for a missing, draft or hidden one)."""
    if not (4 <= len(public_id) <= 16 and public_id.isascii() and public_id.isalnum()):
        raise NotFound()
    entry = session.scalar(select(ChangelogEntry).where(ChangelogEntry.public_id == public_id,
                                                        _entry_shown(viewer, utcnow(), None))
                           .options(selectinload(ChangelogEntry.product)))
    if entry is None:
        raise NotFound()
    return _entry_release(entry, _shown_items(session, viewer, [entry.id]).get(entry.id, []))


# --- staff ---------------------------------------------------------------------------------------------


class When(StrEnum):
    draft = "draft"
    now = "now"
    schedule = "schedule"


def _moment(value: Any) -> Any:
    """A date and time as a datetime-local field sends it (YYYY-MM-DDTHH:MM), read as UTC; empty is None."""
    raw = str(value or "").strip()
    if not raw:
        return None
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise refuse("Give the date and time as YYYY-MM-DD HH:MM (UTC).") from None
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.replace(tzinfo=UTC, second=0, microsecond=0)


class EntryCreate(FormModel):
    """The changelog entry form. Order of fields: order of messages."""

    title: Annotated[str, text(200, required="A title is required.", one_line="The title is one line.")] = ""
    notes: Annotated[str, text(20000, newlines=True)] = ""
    product_id: Annotated[int | None, whole_number("Choose a product.", required=False)] = None
    items: tuple[Annotated[int, whole_number("One of the items is no longer released; please choose again.")], ...] = ()
    when: Annotated[When, choice(When, "Choose when to publish the entry.", empty=When.draft)] = When.draft
    publish_at: Annotated[datetime | None, BeforeValidator(_moment)] = None

    @field_validator("publish_at", mode="after")
    @classmethod
    def _scheduled(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        if info.data.get("when") is not When.schedule:
            return None
        if value is None:
            raise refuse("Give the date and the time to publish it at.")
        if value <= utcnow():
            raise refuse("Choose a time in the future, or publish it now.")
        return value


class EntryUpdate(EntryCreate):
    """The same fields for an existing entry."""


@dataclass(slots=True)
class EntryInput:
    title: str
    notes: str
    product: Product | None
    items: list[Item]
    published_at: datetime | None


def resolve_entry(session: Session, data: EntryCreate, *, entry: ChangelogEntry | None = None) -> EntryInput:
    """The rows the form names; FormInvalid when a product is gone or an item is not releasable any more."""
    errors: dict[str, str] = {}
    product = session.get(Product, data.product_id) if data.product_id else None
    if data.product_id and product is None:
        errors["product_id"] = "Choose a product."
    wanted = set(data.items)
    items = list(session.scalars(_releasable(entry).where(Item.id.in_(wanted)))) if wanted else []
    if len(items) != len(wanted):
        errors["items"] = "One of the items is no longer released, or another entry took it; please choose again."
    if errors:
        raise FormInvalid(errors)
    now = utcnow()
    published_at = {When.draft: None, When.now: now, When.schedule: data.publish_at}[data.when]
    if data.when is When.now and entry is not None and entry.published_at is not None and entry.published_at <= now:
        published_at = entry.published_at  # saving a published entry again keeps its date
    return EntryInput(title=data.title, notes=data.notes, product=product,
                      items=sorted(items, key=lambda i: i.released_at or now, reverse=True),
                      published_at=published_at)


def _releasable(entry: ChangelogEntry | None) -> Select[Item]:
    """Released, unmerged items (any visibility: staff choose) that no other entry holds."""
    other = exists().where(_entry_items.c.item_id == Item.id)
    if entry is not None:
        other = exists().where(_entry_items.c.item_id == Item.id, _entry_items.c.entry_id != entry.id)
    return (select(Item).join(Stage, Stage.id == Item.stage_id)
            .where(Stage.is_released.is_(True), Item.released_at.is_not(None), Item.merged_into_id.is_(None), ~other))


def list_releasable(session: Session, *, entry: ChangelogEntry | None = None, limit: int = 200) -> list[Item]:
    """The items an entry may group, newest release first (the entry's own ones included)."""
    return list(session.scalars(_releasable(entry).options(selectinload(Item.product))
                                .order_by(Item.released_at.desc(), Item.id.desc()).limit(limit)))


def list_entries_for_staff(session: Session, *, page: int = 1, per_page: int = 50) -> tuple[list[ChangelogEntry], int]:
    total = session.scalar(select(func.count()).select_from(ChangelogEntry)) or 0
    entries = session.scalars(
        select(ChangelogEntry).options(selectinload(ChangelogEntry.product), selectinload(ChangelogEntry.items))
        .order_by(ChangelogEntry.published_at.is_(None).desc(), ChangelogEntry.published_at.desc(),
                  ChangelogEntry.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    )
    return list(entries), total


def get_entry_for_staff(session: Session, public_id: str) -> ChangelogEntry:
    entry = session.scalar(select(ChangelogEntry).where(ChangelogEntry.public_id == public_id)
                           .options(selectinload(ChangelogEntry.product),
                                    selectinload(ChangelogEntry.items).selectinload(Item.product)))
    if entry is None:
        raise NotFound()
    return entry


def _new_public_id(session: Session) -> str:
    while True:
        candidate = "".join(secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(8))
        if session.scalar(select(ChangelogEntry.id).where(ChangelogEntry.public_id == candidate)) is None:
            return candidate


def _snapshot(entry: ChangelogEntry) -> dict[str, Any]:
    return {"title": entry.title, "notes": entry.notes, "product": entry.product.name if entry.product else "",
            "items": [i.title for i in entry.items], "published_at": entry.published_at}


def _assign(entry: ChangelogEntry, data: EntryInput) -> None:
    entry.title, entry.notes = data.title, data.notes
    entry.slug = roadmap.slugify(data.title)
    entry.product_id = data.product.id if data.product else None
    entry.product = data.product
    entry.published_at = data.published_at


def create_entry(session: Session, *, data: EntryInput, actor: User) -> ChangelogEntry:
    now = utcnow()
    entry = ChangelogEntry(public_id=_new_public_id(session), created_by_id=actor.id, created_at=now,
                           updated_at=now, items=list(data.items))
    _assign(entry, data)
    session.add(entry)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.changelog_created, entity=entry, entity_type="changelog",
                 changes=audit.diff({}, _snapshot(entry)))
    _emit_published(session, entry, was=None)
    return entry


def iso(moment: datetime) -> str:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z")


def _emit_published(session: Session, entry: ChangelogEntry, *, was: datetime | None) -> None:
    """`changelog.published` and the subscribers' emails (MAIL_JOB, app/notify/changelog.py) when an entry is
    published now, or at its time when scheduled (the job then checks that it still is). Moving a scheduled time
    sends it at the new time; the old job finds it moved."""
    at = entry.published_at
    if at is None or at == was:
        return
    now = utcnow()
    if was is not None and was <= now:
        return  # it was out already
    outbox_service.enqueue(session, MAIL_JOB, {"entry_id": entry.id, "published_at": iso(at)},
                           key=f"{MAIL_JOB}:{entry.public_id}:{iso(at)}", run_at=at if at > now else None)
    if not webhooks.wants(session, "changelog.published"):
        return
    items = [{"id": i.public_id, "title": i.title, "visibility": i.visibility.value,
              "url": webhooks.item_data(i)["url"]} for i in entry.items]
    data = {"entry": {"id": entry.public_id, "title": entry.title, "notes": entry.notes,
                      "published_at": webhooks.iso(at), "product": entry.product.slug if entry.product else None,
                      "url": webhooks.absolute(entry.path),
                      "items": items}}
    if at > now:
        webhooks.emit(session, "changelog.published", data, run_at=at,
                      check={"changelog_entry": entry.public_id, "published_at": webhooks.iso(at)})
    else:
        webhooks.emit(session, "changelog.published", data)


def update_entry(session: Session, *, entry: ChangelogEntry, data: EntryInput, actor: User) -> bool:
    """Saves the entry; False when nothing changed."""
    before = _snapshot(entry)
    was = entry.published_at
    _assign(entry, data)
    entry.items[:] = list(data.items)
    changes = audit.diff(before, _snapshot(entry))
    if not changes:
        return False
    entry.updated_at = utcnow()
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.changelog_updated, entity=entry, entity_type="changelog",
                 changes=changes)
    _emit_published(session, entry, was=was)
    return True


def delete_entry(session: Session, *, entry: ChangelogEntry, actor: User) -> None:
    """The entry goes; its items stand alone on the changelog again."""
    audit.record(session, actor=actor, action=AuditAction.changelog_deleted, entity=entry, entity_type="changelog",
                 changes=audit.diff(_snapshot(entry), {}))
    session.delete(entry)
    session.flush()


def latest_update(releases: list[Release]) -> datetime | None:
    return max((r.at for r in releases), default=None)


def schedule_choices(now: datetime | None = None) -> str:
    """The earliest moment the schedule field accepts, as datetime-local's `min` wants it."""
    return ((now or utcnow()) + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M")
