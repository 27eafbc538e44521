"""The roadmap: products, stages, tags, items and their history. All SQL of the domain lives here.

Every read that a non-staff person can reach starts from `visible_items(viewer)`.
"""

from __future__ import annotations

import re
import secrets
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BeforeValidator, ValidationInfo, field_validator
from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, aliased, selectinload

from app import revision
from app.accounts.models import User
from app.accounts.viewer import ANONYMOUS, Viewer
from app.audit import service as audit
from app.audit.actions import AuditAction, IntegrationActor
from app.db import utcnow
from app.errors import Conflict, FormInvalid, NotFound
from app.forms import FormModel, checkbox, choice, refuse, text, whole_number
from app.organisations.models import Segment
from app.paging import pages_of
from app.portal import service as portal
from app.roadmap import search
from app.roadmap.models import (
    Confidence,
    Item,
    Product,
    Stage,
    StageChange,
    Tag,
    Visibility,
    item_segments,
    item_tags,
)
from app.roadmap.timeframes import Timeframe
from app.roadmap.visibility import audience, visible_items
from app.webhooks import service as webhooks

BOARD_CARDS_PER_COLUMN = 12
PAGE_SIZE = 24
_PUBLIC_ID_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"


class Sort(StrEnum):
    newest = "newest"
    top = "top"  # most voted: items.vote_count
    trending = "trending"  # most votes in the last 30 days: items.trend_count
    updated = "updated"


SORT_LABELS = {Sort.newest: "Newest", Sort.top: "Most voted", Sort.trending: "Trending",
               Sort.updated: "Recently updated"}
# Orders that would give vote counts away (the ranking is the counts, roughly): not for viewers from whom an
# admin hid the counts. They get the default order instead, and the sort control does not offer these.
VOTE_SORTS = frozenset({Sort.top, Sort.trending})


_LOCKED = "ahead_locked_items"


def lock_for_activity(session: Session, item: Item, *, refused: str = "This item was merged into another one") -> None:
    """Lock the item's row before attaching something to it (a vote, a withdrawal, a follow, a comment, a
    note), as a merge locks it first; then refuse (Conflict) if a merge committed in the meantime.

    A merge moves what is attached to B when it runs: a vote still being written by another transaction
    would otherwise stay behind on B, unseen, or deadlock with the merge over the vote's unique key.
    Locked first, such a change waits for the merge and is refused, and a merge waits for it. PostgreSQL:
    FOR NO KEY UPDATE (other votes on the item already wait for its counter). SQLite needs no query: a
    write transaction holds the database's write lock from its start, so what it read is current.
    """
    if session.get_bind().dialect.name == "sqlite":
        return
    locked = _locked(session)
    if item.id not in locked:
        merged_into = session.scalar(select(Item.merged_into_id).where(Item.id == item.id)
                                     .with_for_update(key_share=True))
        locked.add(item.id)
        if merged_into is not None:
            from sqlalchemy.orm.attributes import set_committed_value

            set_committed_value(item, "merged_into_id", merged_into)
    if item.merged_into_id is not None:
        raise Conflict(refused + ".")


def mark_locked(session: Session, item: Item) -> None:
    """The item was read with its row locked (FOR NO KEY UPDATE): `lock_for_activity` need not ask again."""
    _locked(session).add(item.id)


def _locked(session: Session) -> set[int]:
    """The items whose rows this session's innermost transaction (or savepoint) has locked: a savepoint rolled
    back releases what was locked in it, and a new transaction holds nothing yet."""
    transaction = session.get_nested_transaction() or session.get_transaction()
    kept: tuple[Any, set[int]] | None = session.info.get(_LOCKED)
    if kept is None or kept[0] is not transaction:
        kept = session.info[_LOCKED] = (transaction, set())
    return kept[1]


# --- lookups -------------------------------------------------------------------------------------------


def list_products(session: Session) -> list[Product]:
    return list(session.scalars(select(Product).order_by(Product.position, Product.name)))


def list_stages(session: Session) -> list[Stage]:
    return list(session.scalars(select(Stage).order_by(Stage.position, Stage.id)))


def list_tags(session: Session) -> list[Tag]:
    return list(session.scalars(select(Tag).order_by(Tag.name)))


@dataclass(frozen=True, slots=True)
class KnownSlugs:
    """The slugs a board filter can name: every product, tag and stage."""

    products: frozenset[str]
    tags: frozenset[str]
    stages: frozenset[str]


_known_slugs: tuple[int, KnownSlugs] | None = None  # (content revision, the slugs), per process


def known_slugs(session: Session) -> KnownSlugs:
    """The slugs there are, read once per content revision (products, tags and stages are content): a filter naming
    none of them is no filter (app/roadmap/views.py, `board`)."""
    global _known_slugs
    rev = revision.both(session)[0]
    kept = _known_slugs
    if kept is None or kept[0] != rev:
        slugs = KnownSlugs(products=frozenset(session.scalars(select(Product.slug))),
                           tags=frozenset(session.scalars(select(Tag.slug))),
                           stages=frozenset(session.scalars(select(Stage.slug))))
        kept = _known_slugs = (rev, slugs)
    return kept[1]


@dataclass(frozen=True, slots=True)
class Filters:
    product: str | None = None
    tag: str | None = None
    stage: str | None = None
    sort: Sort = Sort.newest

    @classmethod
    def parse(cls, *, product: str | None, tag: str | None, stage: str | None, sort: str | None) -> Filters:
        try:
            parsed_sort = Sort(sort) if sort else Sort.newest
        except ValueError:
            parsed_sort = Sort.newest
        return cls(product=product or None, tag=tag or None, stage=stage or None, sort=parsed_sort)

    @property
    def active(self) -> bool:
        return bool(self.product or self.tag or self.stage)


def _counts_shown(session: Session, viewer: Viewer) -> bool:
    return portal.counts_shown(session, viewer)


def sort_options(session: Session, viewer: Viewer) -> dict[Sort, str]:
    """The sorts this viewer may choose, with their labels: not the ones by votes when counts are hidden."""
    if _counts_shown(session, viewer):
        return dict(SORT_LABELS)
    return {sort: label for sort, label in SORT_LABELS.items() if sort not in VOTE_SORTS}


def for_viewer(session: Session, viewer: Viewer, filters: Filters) -> Filters:
    """`filters` as this viewer may use them: a sort by votes is the default order when counts are hidden."""
    if filters.sort in VOTE_SORTS and not _counts_shown(session, viewer):
        from dataclasses import replace

        return replace(filters, sort=Sort.newest)
    return filters


def _apply_filters(stmt: Select[Item], filters: Filters) -> Select[Item]:
    if filters.product:
        stmt = stmt.where(Item.product_id == select(Product.id).where(Product.slug == filters.product).scalar_subquery())
    if filters.tag:
        stmt = stmt.where(
            Item.id.in_(select(item_tags.c.item_id).join(Tag, Tag.id == item_tags.c.tag_id).where(Tag.slug == filters.tag))
        )
    if filters.stage:
        stmt = stmt.where(Item.stage_id == select(Stage.id).where(Stage.slug == filters.stage).scalar_subquery())
    return stmt


def _order(sort: Sort) -> list[Any]:
    if sort is Sort.updated:
        return [Item.updated_at.desc(), Item.id.desc()]
    if sort is Sort.top:
        return [Item.vote_count.desc(), Item.trend_count.desc(), Item.id.desc()]
    if sort is Sort.trending:
        return [Item.trend_count.desc(), Item.vote_count.desc(), Item.id.desc()]
    return [func.coalesce(Item.published_at, Item.created_at).desc(), Item.id.desc()]


def _card_order(sort: Sort, viewer: Viewer) -> list[Any]:
    """`_order` for the board and its stage pages. Non-staff viewers only ever see published items, so
    for them "newest" is `published_at` itself, the same order, which the index on (stage_id,
    published_at) hands out without sorting every item of a stage (measured with bench/board.py)."""
    if sort is Sort.newest and not viewer.is_staff:
        return [Item.published_at.desc(), Item.id.desc()]
    return _order(sort)


_CARD_OPTIONS = (selectinload(Item.tags), selectinload(Item.product), selectinload(Item.stage))


@dataclass(slots=True)
class Column:
    stage: Stage
    items: list[Item] = field(default_factory=list)
    total: int = 0

    @property
    def more(self) -> int:
        return max(0, self.total - len(self.items))


def get_board(session: Session, viewer: Viewer, filters: Filters, *, per_column: int = BOARD_CARDS_PER_COLUMN) -> list[Column]:
    """The board's columns (stages shown on the board), each with its top cards and its total."""
    filters = for_viewer(session, viewer, filters)
    stages = list_stages(session)
    if filters.stage:
        shown = [s for s in stages if s.slug == filters.stage]
    else:
        shown = [s for s in stages if s.on_board]
    columns = {s.id: Column(stage=s) for s in shown}
    if not columns:
        return []
    base = _apply_filters(visible_items(viewer), filters).where(Item.stage_id.in_(columns))
    counts = session.execute(
        base.with_only_columns(Item.stage_id, func.count(), maintain_column_froms=True).group_by(Item.stage_id).order_by(None)
    )
    for stage_id, total in counts:
        columns[stage_id].total = total
    # Each column's top cards: a small index-ordered LIMIT query per stage, glued into one statement with
    # UNION ALL. (A row_number() window over the board sorted every visible item on every request: about
    # 80 ms of CPU at 10,000 items on SQLite.)
    from sqlalchemy import union_all

    order = _card_order(filters.sort, viewer)
    tops = [
        select(base.with_only_columns(Item.id, maintain_column_froms=True).where(Item.stage_id == stage_id)
               .order_by(*order).limit(per_column).subquery().c.id)
        for stage_id, column in columns.items() if column.total
    ]
    if not tops:
        return list(columns.values())
    rows = session.scalars(
        visible_items(viewer).where(Item.id.in_(union_all(*tops))).order_by(Item.stage_id, *order)
        .options(selectinload(Item.tags), selectinload(Item.product))
    )
    stage_by_id = {s.id: s for s in shown}
    for item in rows:
        columns[item.stage_id].items.append(item)
        _set_loaded(item, "stage", stage_by_id[item.stage_id])
    return list(columns.values())


def _set_loaded(item: Item, name: str, value: Any) -> None:
    """Attach an already-loaded related object without a query (relationships are lazy='raise')."""
    from sqlalchemy.orm.attributes import set_committed_value

    set_committed_value(item, name, value)


def list_items(session: Session, viewer: Viewer, filters: Filters, *, page: int = 1,
               per_page: int = PAGE_SIZE) -> tuple[list[Item], int]:
    filters = for_viewer(session, viewer, filters)
    base = _apply_filters(visible_items(viewer), filters)
    total = _count(session, base)
    items = session.scalars(
        base.options(*_CARD_OPTIONS).order_by(*_card_order(filters.sort, viewer)).offset((page - 1) * per_page)
        .limit(per_page)
    )
    return list(items), total


# (content revision, minute) -> (audience, filters but the sort) -> how many pages the list has, per process
_page_counts: tuple[tuple[int, int], dict[tuple[Any, ...], int]] | None = None
MAX_PAGE_COUNTS = 10_000


def page_count(session: Session, viewer: Viewer, filters: Filters, *, per_page: int = PAGE_SIZE) -> int:
    """How many pages `list_items` has for this viewer and these filters (1 when there are none): read once per
    content revision, minute (scheduled items appear on their minute) and audience, so that a page number past the end
    costs no count per request (app/roadmap/views.py, `board`); staff's are counted each time."""
    global _page_counts
    who = audience(viewer)
    if who is None:
        return _pages(session, viewer, filters, per_page)
    under = (revision.both(session)[0], int(time.time() // 60))
    kept = _page_counts
    if kept is None or kept[0] != under or len(kept[1]) >= MAX_PAGE_COUNTS:
        kept = _page_counts = (under, {})
    key = (who, filters.product, filters.tag, filters.stage, per_page)
    pages = kept[1].get(key)
    if pages is None:
        pages = kept[1][key] = _pages(session, viewer, filters, per_page)
    return pages


def _pages(session: Session, viewer: Viewer, filters: Filters, per_page: int) -> int:
    return pages_of(_count(session, _apply_filters(visible_items(viewer), filters)), per_page)


def _count(session: Session, stmt: Select[Any]) -> int:
    """How many rows `stmt` selects (its order and columns aside)."""
    return session.scalar(stmt.with_only_columns(func.count(), maintain_column_froms=True).order_by(None)) or 0


def get_horizons(session: Session, viewer: Viewer, filters: Filters, *, limit: int = 200) -> dict[Timeframe, list[Item]]:
    """Open items (not released, not closed) grouped Now / Next / Later."""
    filters = for_viewer(session, viewer, filters)
    stmt = (
        _apply_filters(visible_items(viewer), filters)
        .join(Stage, Stage.id == Item.stage_id)
        .where(Stage.is_released.is_(False), Stage.is_closed.is_(False))
        .options(*_CARD_OPTIONS)
        .order_by(*_order(filters.sort))
        .limit(limit)
    )
    groups: dict[Timeframe, list[Item]] = {Timeframe.now: [], Timeframe.next: [], Timeframe.later: []}
    for item in session.scalars(stmt):
        groups[item.horizon].append(item)
    return groups


def get_visible_item(session: Session, viewer: Viewer, public_id: str) -> Item:
    """The item, or NotFound, the same for a missing and a hidden one."""
    if not re.fullmatch(r"[a-z0-9]{4,16}", public_id or ""):
        raise NotFound()
    item = session.scalar(
        visible_items(viewer).where(Item.public_id == public_id).options(*_CARD_OPTIONS)
    )
    if item is None:
        raise NotFound()
    return item


def get_timeline(session: Session, item: Item) -> list[StageChange]:
    return list(
        session.scalars(
            select(StageChange)
            .where(StageChange.item_id == item.id)
            .options(selectinload(StageChange.from_stage), selectinload(StageChange.to_stage))
            .order_by(StageChange.changed_at, StageChange.id)
        )
    )


def list_public_items(session: Session) -> list[Item]:
    """What a signed-out visitor may see, for the sitemap."""
    return list(session.scalars(visible_items(ANONYMOUS).order_by(Item.updated_at.desc())))


# --- staff: items ----------------------------------------------------------------------------------------


@dataclass(slots=True)
class ItemInput:
    title: str
    summary: str
    description: str
    internal_notes: str
    release_notes: str
    product: Product
    stage: Stage
    timeframe: Timeframe
    target_year: int | None
    target_quarter: int | None
    confidence: Confidence | None
    visibility: Visibility
    tags: list[Tag]
    # Only with visibility `customers`: the segments it is limited to (empty: every signed-in customer).
    segments: list[Segment] = field(default_factory=list)


_TAG_GONE = "One of the tags no longer exists; please choose again."
_SEGMENT_GONE = "One of the segments no longer exists; please choose again."


def _timeframe(value: Any) -> Any:
    """Now, next, later, or a quarter as `YYYY-Qn`; nothing chosen is later."""
    raw = str(value or "") or Timeframe.later.value
    if re.fullmatch(r"[0-9]{4}-Q[1-4]", raw):
        return raw
    if raw == Timeframe.quarter.value:
        raise refuse("Choose a quarter.")
    if raw not in {t.value for t in Timeframe}:
        raise refuse("Choose Now, Next, Later or a quarter.")
    return raw


class ItemCreate(FormModel):
    """The staff item form (new item, or an idea turned into one). Order of fields: order of messages."""

    title: Annotated[str, text(200, required="A title is required.")] = ""
    summary: Annotated[str, text(300, one_line="The summary is one line.")] = ""
    description: Annotated[str, text(20000)] = ""
    internal_notes: Annotated[str, text(20000)] = ""
    release_notes: Annotated[str, text(20000)] = ""
    product_id: Annotated[int, whole_number("Choose a product.")] = 0  # 0: none chosen, refused
    stage_id: Annotated[int, whole_number("Choose a stage.")] = 0
    timeframe: Annotated[str, BeforeValidator(_timeframe)] = Timeframe.later.value
    confidence: Annotated[Confidence | None, choice(Confidence, "Choose low, medium or high.", empty=None)] = None
    visibility: Annotated[Visibility, choice(Visibility, "Choose who can see the item.",
                                             empty=Visibility.public)] = Visibility.public
    tags: tuple[Annotated[int, whole_number(_TAG_GONE)], ...] = ()
    # Segments only mean something for `customers` items; for any other visibility they are dropped.
    # The rule is in the annotation, so a refused form's other checks (`Submitted.resolve`, which validates
    # each field on its own) never look up an id no column holds.
    segments: tuple[Annotated[int, whole_number(_SEGMENT_GONE)], ...] = ()

    @field_validator("segments", mode="before")
    @classmethod
    def _segments(cls, value: Any, info: ValidationInfo) -> Any:
        return value if info.data.get("visibility") is Visibility.customers else ()

    @property
    def target(self) -> tuple[Timeframe, int | None, int | None]:
        """The timeframe, and the year and quarter when it is a quarter."""
        if self.timeframe[4:6] == "-Q":
            return Timeframe.quarter, int(self.timeframe[:4]), int(self.timeframe[-1])
        return Timeframe(self.timeframe), None, None


class ItemUpdate(ItemCreate):
    """The staff item form for an existing item: the same fields."""


def resolve_item(session: Session, data: ItemCreate) -> ItemInput:
    """The rows a validated item form names; FormInvalid for those that no longer exist."""
    errors: dict[str, str] = {}
    product = session.get(Product, data.product_id)
    if product is None:
        errors["product_id"] = "Choose a product."
    stage = session.get(Stage, data.stage_id)
    if stage is None:
        errors["stage_id"] = "Choose a stage."
    wanted = set(data.tags)
    tags = list(session.scalars(select(Tag).where(Tag.id.in_(wanted)))) if wanted else []
    if len(tags) != len(wanted):
        errors["tags"] = _TAG_GONE
    wanted_segments = set(data.segments)
    segments = list(session.scalars(select(Segment).where(Segment.id.in_(wanted_segments)))) if wanted_segments else []
    if len(segments) != len(wanted_segments):
        errors["segments"] = _SEGMENT_GONE
    if errors:
        raise FormInvalid(errors)
    assert product is not None and stage is not None
    timeframe, target_year, target_quarter = data.target
    return ItemInput(
        title=data.title, summary=data.summary, description=data.description, internal_notes=data.internal_notes,
        release_notes=data.release_notes, product=product, stage=stage, timeframe=timeframe,
        target_year=target_year, target_quarter=target_quarter, confidence=data.confidence,
        visibility=data.visibility, tags=sorted(tags, key=lambda t: t.name),
        segments=sorted(segments, key=lambda s: s.name),
    )


def slugify(text: str, limit: int = 80) -> str:
    """An address's words for `text`: ASCII letters and digits joined by hyphens, folded as search folds words
    (`search.fold`: "ß" is "ss", "ﬁ" is "fi", accents dropped), and the Latin letters that have no ASCII base written
    as their usual spelling ("æ" as "ae", "ø" as "o"); any other character separates words."""
    ascii_text = search.fold(text).translate(_SPELLED_OUT).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return slug[:limit].rstrip("-")


# Letters Unicode does not decompose into an ASCII letter and an accent, after case folding
_SPELLED_OUT = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "ł": "l", "đ": "d", "ð": "d", "þ": "th", "ħ": "h",
                              "ı": "i", "ŧ": "t"})


def _new_public_id(session: Session) -> str:
    while True:
        candidate = "".join(secrets.choice(_PUBLIC_ID_ALPHABET) for _ in range(8))
        if session.scalar(select(Item.id).where(Item.public_id == candidate)) is None:
            return candidate


def _snapshot(item: Item) -> dict[str, Any]:
    return {
        "title": item.title, "summary": item.summary, "description": item.description,
        "internal_notes": item.internal_notes, "release_notes": item.release_notes,
        "product": item.product.name, "stage": item.stage.name, "timeframe": item.timeframe_label,
        "confidence": item.confidence, "visibility": item.visibility,
        "tags": [t.name for t in item.tags], "published": item.published_at is not None,
        "segments": [s.name for s in item.segments],
    }


def create_item(session: Session, *, data: ItemInput, author: User, publish: bool = False) -> Item:
    now = utcnow()
    item = Item(public_id=_new_public_id(session), created_by_id=author.id, created_at=now, updated_at=now)
    _assign(item, data, new=True)
    item.published_at = now if publish else None
    if data.stage.is_released:
        item.released_at = now
    session.add(item)
    session.flush()
    session.add(StageChange(item_id=item.id, from_stage_id=None, to_stage_id=data.stage.id,
                            changed_by_id=author.id, changed_at=now))
    search.index_item(session, item)
    audit.record(session, actor=author, action=AuditAction.item_created, entity=item,
                 changes=audit.diff({}, _snapshot(item)))
    if publish:
        _emit_item(session, "item.published", item, actor=author)
    return item


def _emit_item(session: Session, event_type: str, item: Item, *, actor: User | IntegrationActor | None,
               changes: dict[str, list[Any]] | None = None) -> None:
    """An item event for the webhooks that want it (nothing is built when none does)."""
    if not webhooks.wants(session, event_type):
        return
    data: dict[str, Any] = {"item": webhooks.item_data(item), "actor": webhooks.person(actor)}
    if changes is not None:
        data["changes"] = webhooks.changes(changes)
    webhooks.emit(session, event_type, data)


def _emit_move(session: Session, item: Item, *, old: Stage, new: Stage, actor: User | IntegrationActor | None) -> None:
    _emit_item(session, "item.stage_changed", item, actor=actor, changes={"stage": [
        {"slug": old.slug, "name": old.name}, {"slug": new.slug, "name": new.name}]})  # as item.stage gives it
    if new.is_released and not old.is_released:
        _emit_item(session, "item.released", item, actor=actor)


def _assign(item: Item, data: ItemInput, *, new: bool = False) -> None:
    # `new`, not `item.id is None`: the mapping types the id as always set, which holds from the flush on.
    item.title, item.summary, item.description = data.title, data.summary, data.description
    item.internal_notes, item.release_notes = data.internal_notes, data.release_notes
    item.slug = slugify(data.title)
    item.product_id, item.stage_id = data.product.id, data.stage.id
    _set_loaded(item, "product", data.product)
    _set_loaded(item, "stage", data.stage)
    item.timeframe, item.target_year, item.target_quarter = data.timeframe, data.target_year, data.target_quarter
    item.confidence, item.visibility = data.confidence, data.visibility
    segments = list(data.segments) if data.visibility is Visibility.customers else []
    if new:
        item.tags = list(data.tags)
        item.segments = segments
    else:
        item.tags[:] = list(data.tags)
        item.segments[:] = segments


def update_item(session: Session, *, item: Item, data: ItemInput, actor: User) -> Item:
    before = _snapshot(item)
    old_stage = item.stage
    text_before = (item.title, item.summary, item.description)
    _assign(item, data)
    if old_stage.id != data.stage.id:
        _record_move(session, item=item, old=old_stage, new=data.stage, actor=actor)
    changes = audit.diff(before, _snapshot(item))
    if not changes:
        return item
    item.updated_at = utcnow()
    session.flush()
    if text_before != (item.title, item.summary, item.description):
        search.index_item(session, item)
    audit.record(session, actor=actor, action=AuditAction.item_updated, entity=item, changes=changes)
    if old_stage.id != data.stage.id:
        _emit_move(session, item, old=old_stage, new=data.stage, actor=actor)
    others = {k: v for k, v in changes.items() if k not in ("stage", "internal_notes")}
    if others:
        _emit_item(session, "item.updated", item, actor=actor, changes=others)
    return item


class ReleaseNotes(FormModel):
    """The release notes the stage-move form asks for: they go to the changelog when the item is released."""

    release_notes: Annotated[str | None, text(20000, newlines=True)] = None


def move_item(session: Session, *, item: Item, stage: Stage, actor: User | IntegrationActor,
              release_notes: str | None = None) -> None:
    """Moves the item; `release_notes` (None: left as they are) are kept when the new stage is a released one.
    The actor is a PM, or a tracker integration (its label in the audit log, no user on the stage change)."""
    if item.stage_id == stage.id:
        return
    old = item.stage
    item.stage_id = stage.id
    _set_loaded(item, "stage", stage)
    item.updated_at = utcnow()
    _record_move(session, item=item, old=old, new=stage, actor=actor)
    changes: dict[str, list[Any]] = {"stage": [old.name, stage.name]}
    if stage.is_released and release_notes is not None and release_notes != item.release_notes:
        changes["release_notes"] = [item.release_notes, release_notes]
        item.release_notes = release_notes
    audit.record(session, actor=actor, action=AuditAction.item_moved, entity=item, changes=changes)
    _emit_move(session, item, old=old, new=stage, actor=actor)


def _record_move(session: Session, *, item: Item, old: Stage, new: Stage, actor: User | IntegrationActor) -> None:
    now = utcnow()
    session.add(StageChange(item_id=item.id, from_stage_id=old.id, to_stage_id=new.id,
                            changed_by_id=actor.id, changed_at=now))
    if new.is_released and not old.is_released:
        item.released_at = now
    elif not new.is_released:
        item.released_at = None


def set_published(session: Session, *, item: Item, published: bool, actor: User) -> None:
    if (item.published_at is not None) == published:
        return
    item.published_at = utcnow() if published else None
    item.updated_at = utcnow()
    audit.record(session, actor=actor, action=AuditAction.item_published if published else AuditAction.item_unpublished,
                 entity=item, changes={"published": [not published, published]})
    if published:
        _emit_item(session, "item.published", item, actor=actor)


def get_item_for_staff(session: Session, public_id: str) -> Item:
    item = session.scalar(select(Item).where(Item.public_id == public_id)
                          .options(*_CARD_OPTIONS, selectinload(Item.segments)))
    if item is None:
        raise NotFound()
    return item


class StaffStatus(StrEnum):
    all = "all"
    draft = "draft"
    published = "published"


class StaffSort(StrEnum):
    updated = "updated"  # last changed first
    votes = "votes"  # most votes first (all time, the item's own counter)
    demand = "demand"  # heaviest weighted demand first (all time; the ranking comes from the desk)


def list_items_for_staff(session: Session, *, q: str = "", status: StaffStatus = StaffStatus.all,
                         product: str | None = None, stage: str | None = None, page: int = 1,
                         per_page: int = 50, sort: StaffSort = StaffSort.updated, ascending: bool = False,
                         ranking: Any = None) -> tuple[list[Item], int]:
    """A page of items for staff. With `sort=demand`, `ranking` is a subquery (item_id, demand) to order by
    (the desk's `demand_ranking`: this module knows no weights). `ascending` reverses the sort (fewest votes,
    lightest demand, oldest change first); ties stay latest changed first."""
    stmt = _apply_filters(select(Item), Filters(product=product, stage=stage))
    if status is StaffStatus.draft:
        stmt = stmt.where(Item.published_at.is_(None))
    elif status is StaffStatus.published:
        stmt = stmt.where(Item.published_at.is_not(None))
    if q.strip():
        stmt = stmt.where(Item.id.in_(search.matching_ids(session.get_bind().dialect.name, q)))
    total = _count(session, stmt)
    first: list[Any] = []
    if sort is StaffSort.votes:
        first = [Item.vote_count.asc() if ascending else Item.vote_count.desc()]
    elif sort is StaffSort.demand and ranking is not None:
        stmt = stmt.outerjoin(ranking, ranking.c.item_id == Item.id)
        demand = func.coalesce(ranking.c.demand, 0.0)
        first = [demand.asc() if ascending else demand.desc()]
    elif ascending:
        first = [Item.updated_at.asc(), Item.id.asc()]
    items = session.scalars(
        stmt.options(*_CARD_OPTIONS)
        .order_by(*first, Item.updated_at.desc(), Item.id.desc())
        .offset((page - 1) * per_page).limit(per_page)
    )
    return list(items), total


# --- staff: products, stages, tags -----------------------------------------------------------------------


def _unique_slug(session: Session, model: Any, name: str, *, exclude_id: int | None = None) -> str:
    base = slugify(name, 50) or "x"
    slug, n = base, 2
    while True:
        stmt = select(model.id).where(model.slug == slug)
        if exclude_id is not None:
            stmt = stmt.where(model.id != exclude_id)
        if session.scalar(stmt) is None:
            return slug
        slug, n = f"{base}-{n}", n + 1


_NAME_REQUIRED = "A name is required."


class ProductCreate(FormModel):
    name: Annotated[str, text(80, required=_NAME_REQUIRED)] = ""
    description: Annotated[str, text(2000)] = ""


class ProductUpdate(ProductCreate):
    """The same fields as a new product."""


class StageCreate(FormModel):
    name: Annotated[str, text(60, required=_NAME_REQUIRED)] = ""
    is_released: Annotated[bool, checkbox()] = False
    is_closed: Annotated[bool, checkbox()] = False
    on_board: Annotated[bool, checkbox()] = False


class StageUpdate(StageCreate):
    """The same fields as a new stage."""


class TagCreate(FormModel):
    name: Annotated[str, text(60, required=_NAME_REQUIRED)] = ""


class TagUpdate(TagCreate):
    """The same field as a new tag."""


def create_product(session: Session, *, data: ProductCreate, actor: User) -> Product:
    position = (session.scalar(select(func.max(Product.position))) or 0) + 1
    product = Product(name=data.name, description=data.description,
                      slug=_unique_slug(session, Product, data.name), position=position)
    session.add(product)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.product_created, entity=product, changes={"name": [None, data.name]})
    return product


def update_product(session: Session, *, product: Product, data: ProductUpdate, actor: User) -> None:
    before = {"name": product.name, "description": product.description}
    product.name, product.description = data.name, data.description
    changes = audit.diff(before, {"name": product.name, "description": product.description})
    if changes:
        audit.record(session, actor=actor, action=AuditAction.product_updated, entity=product, changes=changes)


def delete_product(session: Session, *, product: Product, actor: User) -> None:
    if session.scalar(select(func.count()).select_from(Item).where(Item.product_id == product.id)):
        raise Conflict(f"“{product.name}” still has items. Move them to another product first.")
    audit.record(session, actor=actor, action=AuditAction.product_deleted, entity=product, changes={"name": [product.name, None]})
    session.delete(product)


def create_stage(session: Session, *, data: StageCreate, actor: User) -> Stage:
    position = (session.scalar(select(func.max(Stage.position))) or 0) + 1
    stage = Stage(name=data.name, slug=_unique_slug(session, Stage, data.name), position=position,
                  is_released=data.is_released, is_closed=data.is_closed, on_board=data.on_board)
    session.add(stage)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.stage_created, entity=stage, changes={"name": [None, data.name]})
    return stage


def update_stage(session: Session, *, stage: Stage, data: StageUpdate, actor: User) -> None:
    def snap() -> dict[str, Any]:
        return {"name": stage.name, "is_released": stage.is_released, "is_closed": stage.is_closed,
                "on_board": stage.on_board}

    before = snap()
    stage.name = data.name
    stage.is_released, stage.is_closed, stage.on_board = data.is_released, data.is_closed, data.on_board
    changes = audit.diff(before, snap())
    if changes:
        audit.record(session, actor=actor, action=AuditAction.stage_updated, entity=stage, changes=changes)


def move_stage_position(session: Session, *, stage: Stage, direction: int, actor: User) -> None:
    """Swap the stage with its neighbour (direction -1: earlier, +1: later)."""
    stages = list_stages(session)
    index = next(i for i, s in enumerate(stages) if s.id == stage.id)
    other = index + direction
    if not 0 <= other < len(stages):
        return
    before = [s.name for s in stages]
    stages[index], stages[other] = stages[other], stages[index]
    for position, s in enumerate(stages):
        s.position = position
    audit.record(session, actor=actor, action=AuditAction.stage_reordered, entity=stage,
                 changes={"order": [before, [s.name for s in stages]]})


def delete_stage(session: Session, *, stage: Stage, actor: User) -> None:
    if session.scalar(select(func.count()).select_from(Item).where(Item.stage_id == stage.id)):
        raise Conflict(f"“{stage.name}” still has items. Move them to another stage first.")
    if session.scalar(select(func.count()).select_from(StageChange).where(
            (StageChange.to_stage_id == stage.id) | (StageChange.from_stage_id == stage.id))):
        raise Conflict(f"“{stage.name}” appears on item timelines; rename it instead of deleting it.")
    audit.record(session, actor=actor, action=AuditAction.stage_deleted, entity=stage, changes={"name": [stage.name, None]})
    session.delete(stage)


def create_tag(session: Session, *, data: TagCreate, actor: User) -> Tag:
    name = data.name
    if session.scalar(select(Tag.id).where(func.lower(Tag.name) == name.lower())):
        raise FormInvalid({"name": f"There is already a tag called “{name}”."})
    tag = Tag(name=name, slug=_unique_slug(session, Tag, name))
    session.add(tag)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.tag_created, entity=tag, changes={"name": [None, name]})
    return tag


def update_tag(session: Session, *, tag: Tag, data: TagUpdate, actor: User) -> None:
    before, name = tag.name, data.name
    if session.scalar(select(Tag.id).where(func.lower(Tag.name) == name.lower(), Tag.id != tag.id)):
        raise FormInvalid({"name": f"There is already a tag called “{name}”."})
    tag.name = name
    if before != tag.name:
        audit.record(session, actor=actor, action=AuditAction.tag_updated, entity=tag, changes={"name": [before, tag.name]})


def delete_tag(session: Session, *, tag: Tag, actor: User) -> None:
    audit.record(session, actor=actor, action=AuditAction.tag_deleted, entity=tag, changes={"name": [tag.name, None]})
    session.delete(tag)


def count_items_per_product(session: Session) -> dict[int, int]:
    """Items (drafts included) of each product: a product in use cannot be deleted."""
    rows = session.execute(select(Item.product_id, func.count()).group_by(Item.product_id))
    return dict(rows.all())  # rows of two columns


def count_items_per_stage(session: Session) -> dict[int, int]:
    rows = session.execute(select(Item.stage_id, func.count()).group_by(Item.stage_id))
    return dict(rows.all())  # rows of two columns


def count_items_per_tag(session: Session) -> dict[int, int]:
    rows = session.execute(select(item_tags.c.tag_id, func.count()).group_by(item_tags.c.tag_id))
    return dict(rows.all())  # rows of two columns


def count_items_per_segment(session: Session) -> dict[int, int]:
    """Items limited to each segment (a limit only applies while the item is for customers)."""
    rows = session.execute(select(item_segments.c.segment_id, func.count()).group_by(item_segments.c.segment_id))
    return dict(rows.all())  # rows of two columns


def list_items_limited_only_to(session: Session, *, segment: Segment) -> list[Item]:
    """Items limited to this segment and no other: without it they would be open to every customer."""
    others = aliased(item_segments)
    return list(session.scalars(
        select(Item).join(item_segments, item_segments.c.item_id == Item.id)
        .where(item_segments.c.segment_id == segment.id,
               ~exists().where(others.c.item_id == Item.id, others.c.segment_id != segment.id))
        .order_by(Item.title, Item.id)
    ))


@dataclass(slots=True)
class Overview:
    """What the staff overview shows: published items per stage, and drafts waiting."""

    published_by_stage: list[tuple[Stage, int]]
    published: int
    drafts: int


def get_overview(session: Session) -> Overview:
    live = select(Item.stage_id, Item.published_at.is_not(None), func.count()).where(Item.merged_into_id.is_(None))
    published: dict[int, int] = {}
    drafts = 0
    for stage_id, is_published, n in session.execute(live.group_by(Item.stage_id, Item.published_at.is_not(None))):
        if is_published:
            published[stage_id] = published.get(stage_id, 0) + n
        else:
            drafts += n
    per_stage = [(s, published.get(s.id, 0)) for s in list_stages(session)]
    return Overview(published_by_stage=per_stage, published=sum(published.values()), drafts=drafts)


def get_by_id(session: Session, model: type[Any], object_id: int) -> Any:
    obj = session.get(model, object_id)
    if obj is None:
        raise NotFound()
    return obj
