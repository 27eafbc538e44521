"""The technology roadmap: initiatives, their items, backlog links, delivery progress, tracker webhooks and
the stage moves they may make. All SQL of the domain lives here.

Internal only: nothing here reads through `visible_items`, because no customer surface calls it, except
`public_progress`, a plain percentage the item page shows when a PM turned it on for that item.
"""

from __future__ import annotations

import csv
import io
import re
import secrets
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import BeforeValidator
from sqlalchemy import delete as delete_rows
from sqlalchemy import func, or_, select
from sqlalchemy import text as sql
from sqlalchemy import update as update_rows
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.orm import Session, selectinload

from app.accounts.models import Role, User
from app.audit import service as audit
from app.audit.actions import AuditAction, IntegrationActor
from app.db import utcnow
from app.desk import service as desk
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, choice, refuse, text, whole_number
from app.notify import service as notify
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Product, Stage
from app.tech import trackers
from app.tech.models import (
    REFUSALS_KEPT,
    BacklogLink,
    DeliveryOutcome,
    HookKind,
    Initiative,
    InitiativeStatus,
    ItemDelivery,
    TrackerDelivery,
    TrackerHook,
    TrackerKind,
    TrackerRefusal,
    initiative_items,
)
from app.voting.models import Vote

STATUS_LABELS = {InitiativeStatus.proposed: "Proposed", InitiativeStatus.active: "Active",
                 InitiativeStatus.done: "Done", InitiativeStatus.dropped: "Dropped"}


# --- initiatives ----------------------------------------------------------------------------------------


def _quarter(value: Any) -> Any:
    """"" (no quarter) or YYYY-Qn."""
    if value is None or value == "":
        return ""
    if isinstance(value, str):
        text_value = value.strip().upper()
        if (len(text_value) == 7 and text_value[:4].isdigit() and text_value[4:6] == "-Q"
                and text_value[6] in "1234" and 2000 <= int(text_value[:4]) <= 2100):
            return text_value
    raise refuse("Choose a quarter, or none.")


class InitiativeForm(FormModel):
    title: Annotated[str, text(200, required="A title is required.", one_line="The title is one line.")] = ""
    description: Annotated[str, text(20000, newlines=True)] = ""
    owner_id: Annotated[int | None, whole_number("Choose a staff member, or nobody.", required=False)] = None
    status: Annotated[InitiativeStatus, choice(InitiativeStatus, "Choose proposed, active, done or dropped.",
                                               empty=InitiativeStatus.proposed)] = InitiativeStatus.proposed
    quarter: Annotated[str, BeforeValidator(_quarter)] = ""

    @property
    def target(self) -> tuple[int | None, int | None]:
        return (int(self.quarter[:4]), int(self.quarter[-1])) if self.quarter else (None, None)


def list_staff(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.role.in_([Role.pm, Role.admin]))
                                .order_by(User.display_name, User.email)))


def resolve_initiative(session: Session, data: InitiativeForm) -> InitiativeForm:
    if data.owner_id is not None:
        owner = session.get(User, data.owner_id)
        if owner is None or owner.role not in (Role.pm, Role.admin):
            raise FormInvalid({"owner_id": "Choose a staff member, or nobody."})
    return data


def initiative_values(initiative: Initiative) -> dict[str, str]:
    """An initiative as its form's raw values (the editor's starting point, and an API PATCH's)."""
    quarter = (f"{initiative.target_year}-Q{initiative.target_quarter}"
               if initiative.target_year and initiative.target_quarter else "")
    return {"title": initiative.title, "description": initiative.description, "status": initiative.status.value,
            "owner_id": str(initiative.owner_id or ""), "quarter": quarter}


def _snapshot(initiative: Initiative) -> dict[str, Any]:
    return {"title": initiative.title, "description": initiative.description, "owner": initiative.owner_id,
            "status": initiative.status, "quarter": initiative.quarter_label}


def create_initiative(session: Session, *, data: InitiativeForm, actor: User) -> Initiative:
    year, quarter = data.target
    initiative = Initiative(title=data.title, description=data.description, owner_id=data.owner_id,
                            status=data.status, target_year=year, target_quarter=quarter, items=[])
    session.add(initiative)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.initiative_created, entity=initiative)
    return initiative


def update_initiative(session: Session, *, initiative: Initiative, data: InitiativeForm, actor: User) -> bool:
    before = _snapshot(initiative)
    initiative.title, initiative.description = data.title, data.description
    initiative.owner_id, initiative.status = data.owner_id, data.status
    initiative.target_year, initiative.target_quarter = data.target
    changes = audit.diff(before, _snapshot(initiative))
    if not changes:
        return False
    initiative.updated_at = utcnow()
    audit.record(session, actor=actor, action=AuditAction.initiative_updated, entity=initiative, changes=changes)
    if "owner" in changes:  # the loaded owner is the old one: get_initiative loads the new one
        session.flush()
        session.expire(initiative, ["owner"])
    return True


def delete_initiative(session: Session, *, initiative: Initiative, actor: User) -> None:
    audit.record(session, actor=actor, action=AuditAction.initiative_deleted, entity=initiative)
    session.delete(initiative)
    session.flush()


def get_initiative(session: Session, initiative_id: int) -> Initiative:
    initiative = session.scalar(select(Initiative).where(Initiative.id == initiative_id).options(
        selectinload(Initiative.owner), selectinload(Initiative.items).selectinload(Item.stage),
        selectinload(Initiative.items).selectinload(Item.product)))
    if initiative is None:
        raise NotFound()
    return initiative


@dataclass(frozen=True, slots=True)
class InitiativeFilters:
    status: InitiativeStatus | None = None
    owner_id: int | None = None
    product_slug: str = ""
    quarter: str = ""  # "YYYY-Qn", "none", or "" for any


def list_initiatives(session: Session, filters: InitiativeFilters = InitiativeFilters()) -> list[Initiative]:
    stmt = select(Initiative).options(selectinload(Initiative.owner),
                                      selectinload(Initiative.items).selectinload(Item.product),
                                      selectinload(Initiative.items).selectinload(Item.stage))
    if filters.status is not None:
        stmt = stmt.where(Initiative.status == filters.status)
    if filters.owner_id is not None:
        stmt = stmt.where(Initiative.owner_id == filters.owner_id)
    if filters.quarter == "none":
        stmt = stmt.where(Initiative.target_year.is_(None))
    elif filters.quarter:
        stmt = stmt.where(Initiative.target_year == int(filters.quarter[:4]),
                          Initiative.target_quarter == int(filters.quarter[-1]))
    if filters.product_slug:
        stmt = stmt.where(Initiative.id.in_(
            select(initiative_items.c.initiative_id).join(Item, Item.id == initiative_items.c.item_id)
            .join(Product, Product.id == Item.product_id).where(Product.slug == filters.product_slug)))
    stmt = stmt.order_by(Initiative.target_year.is_(None), Initiative.target_year, Initiative.target_quarter,
                         Initiative.title, Initiative.id)
    return list(session.scalars(stmt))


def quarters_in_use(session: Session) -> list[tuple[int, int]]:
    rows = session.execute(select(Initiative.target_year, Initiative.target_quarter)
                           .where(Initiative.target_year.is_not(None)).distinct()
                           .order_by(Initiative.target_year, Initiative.target_quarter))
    return [(int(y), int(q)) for y, q in rows if y is not None and q is not None]


def link_item(session: Session, *, initiative: Initiative, item: Item, actor: User) -> bool:
    if any(i.id == item.id for i in initiative.items):
        return False
    initiative.items.append(item)
    initiative.updated_at = utcnow()
    audit.record(session, actor=actor, action=AuditAction.initiative_item_linked, entity=initiative,
                 changes={"item": [None, item.title]})
    return True


def unlink_item(session: Session, *, initiative: Initiative, item_id: int, actor: User) -> Item | None:
    item = next((i for i in initiative.items if i.id == item_id), None)
    if item is None:
        return None
    initiative.items.remove(item)
    initiative.updated_at = utcnow()
    audit.record(session, actor=actor, action=AuditAction.initiative_item_unlinked, entity=initiative,
                 changes={"item": [item.title, None]})
    return item


def initiatives_for_item(session: Session, item: Item) -> list[Initiative]:
    return list(session.scalars(select(Initiative).join(initiative_items)
                                .where(initiative_items.c.item_id == item.id)
                                .options(selectinload(Initiative.owner)).order_by(Initiative.title)))


def item_choices(session: Session, *, exclude: list[int]) -> list[tuple[str, str]]:
    """Every item (drafts and internal ones too) a PM may link, as (public id, title)."""
    rows = session.execute(select(Item.public_id, Item.title).where(Item.merged_into_id.is_(None))
                           .where(Item.id.not_in(exclude) if exclude else Item.id.is_not(None))
                           .order_by(Item.title).limit(1000))
    return [(r.public_id, r.title) for r in rows]


# --- demand ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InitiativeDemand:
    voters: int  # distinct people who voted on any of its items
    organisations: int  # distinct organisations among them
    weighted: float  # the sum of its items' weighted demand, as the desk computes each


def demand_for(session: Session, initiatives: list[Initiative]) -> dict[int, InitiativeDemand]:
    item_ids = sorted({i.id for initiative in initiatives for i in initiative.items})
    per_item = desk.demand_by_item(session, item_ids=item_ids, weights=desk.desk_weights(session))
    people: dict[int, tuple[set[int], set[int]]] = {}
    if item_ids:
        rows = session.execute(select(Vote.item_id, Vote.user_id, User.organisation_id)
                               .join(User, User.id == Vote.user_id).where(Vote.item_id.in_(item_ids)))
        for item_id, user_id, organisation_id in rows:
            voters, orgs = people.setdefault(item_id, (set(), set()))
            voters.add(user_id)
            if organisation_id is not None:
                orgs.add(organisation_id)
    result = {}
    for initiative in initiatives:
        voters_all: set[int] = set()
        orgs_all: set[int] = set()
        for item in initiative.items:
            voters, orgs = people.get(item.id, (set(), set()))
            voters_all |= voters
            orgs_all |= orgs
        weighted = sum(per_item.get(item.id, (0, 0.0))[1] for item in initiative.items)
        result[initiative.id] = InitiativeDemand(len(voters_all), len(orgs_all), weighted)
    return result


# --- backlog links and progress -------------------------------------------------------------------------


def _estimate(value: Any) -> Any:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    try:
        number = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise refuse("An estimate is a number, like 3 or 0.5.") from exc
    if not number.is_finite() or number < 0 or number >= 1_000_000:
        raise refuse("An estimate is a number from 0 to 999999.")
    return number.quantize(Decimal("0.01"))


class LinkForm(FormModel):
    url: Annotated[str, text(2000, required="Paste the issue's address.", one_line="The address is one line.")] = ""
    title: Annotated[str, text(300, one_line="The title is one line.")] = ""
    estimate: Annotated[Decimal | None, BeforeValidator(_estimate)] = None


def add_link(session: Session, *, data: LinkForm, actor: User, initiative: Initiative | None = None,
             item: Item | None = None) -> BacklogLink:
    """A tracker issue linked by its address; FormInvalid for an address Ahead does not recognise or one
    already linked here."""
    try:
        ref = trackers.recognise(data.url)
    except trackers.NotAnIssueUrl as exc:
        raise FormInvalid({"url": str(exc)}) from None
    return add_link_ref(session, kind=ref.kind, key=ref.key, url=ref.url, title=data.title,
                        estimate=data.estimate, actor=actor, initiative=initiative, item=item)


def add_link_ref(session: Session, *, kind: TrackerKind, key: str, url: str, title: str = "", status: str = "",
                 done: bool = False, started: bool = False, estimate: Decimal | None = None, actor: User,
                 initiative: Initiative | None = None, item: Item | None = None) -> BacklogLink:
    try:
        trackers.check_link(kind, key, url)
    except trackers.BadLink as exc:
        raise FormInvalid({exc.field: str(exc)}) from None
    if _linked_already(session, kind=kind, key=key, initiative=initiative, item=item):
        raise FormInvalid({"url": f"{key} is linked here already."})
    link = BacklogLink(initiative_id=initiative.id if initiative else None, item_id=item.id if item else None,
                       kind=kind, key=key, url=url, title=title, status=status or ("done" if done else "open"),
                       done=done, started=started or done, estimate=estimate)
    known = _known_issue(session, kind=kind, key=key)
    if known is not None:
        # One status per tracker issue: what Ahead knows of it (from its webhooks, or set on another link) wins
        # over a fresh link's defaults, so a closed issue linked to a second initiative is closed there too.
        link.status, link.done, link.started = known.status, known.done, known.started
        link.tracker_updated_at = known.tracker_updated_at
        link.title = title or known.title
    try:
        with session.begin_nested():
            session.add(link)
            session.flush()
    except IntegrityError:  # the same key linked by a request that committed meanwhile
        raise FormInvalid({"url": f"{key} is linked here already."}) from None
    audit.record(session, actor=actor, action=AuditAction.backlog_link_added,
                 entity=initiative or item, changes={"link": [None, f"{kind.value} {key}"]})
    return link


def _known_issue(session: Session, *, kind: TrackerKind, key: str) -> BacklogLink | None:
    """The link holding the newest news of an issue linked elsewhere (dated tracker news first), or None."""
    return session.scalar(select(BacklogLink).where(BacklogLink.kind == kind, _key_is(kind, key))
                          .order_by(BacklogLink.tracker_updated_at.is_(None), BacklogLink.tracker_updated_at.desc(),
                                    BacklogLink.id.desc()).limit(1))


def _linked_already(session: Session, *, kind: TrackerKind, key: str, initiative: Initiative | None,
                    item: Item | None, other_than: int | None = None) -> bool:
    """The friendly early answer; the unique indexes on lower(key) are what guarantee it."""
    owner = BacklogLink.initiative_id == initiative.id if initiative else BacklogLink.item_id == (item.id if item else 0)
    stmt = select(BacklogLink.id).where(owner, BacklogLink.kind == kind, _key_is(kind, key))
    if other_than is not None:
        stmt = stmt.where(BacklogLink.id != other_than)
    return session.scalar(stmt.limit(1)) is not None


def _key_is(kind: TrackerKind, key: str) -> Any:
    """A where clause finding a link by key: GitHub/GitLab paths compare case-insensitively."""
    if kind in (TrackerKind.github, TrackerKind.gitlab):
        return func.lower(BacklogLink.key) == key.lower()
    return BacklogLink.key == key


def _folded(kind: TrackerKind, key: str) -> str:
    return key.lower() if kind in (TrackerKind.github, TrackerKind.gitlab) else key


@dataclass(frozen=True, slots=True)
class LinkChange:
    """A link's fields after a change (the API's PATCH): whatever was not sent keeps its value."""

    kind: TrackerKind
    key: str
    url: str
    title: str
    status: str
    done: bool
    estimate: Decimal | None


def _link_snapshot(link: BacklogLink) -> dict[str, Any]:
    return {"kind": link.kind.value, "key": link.key, "url": link.url, "title": link.title, "status": link.status,
            "done": link.done, "estimate": _plain(link.estimate) if link.estimate is not None else None}


def update_link(session: Session, *, link: BacklogLink, change: LinkChange, actor: User) -> bool:
    """Change a link with the checks of a new one (its key in its tracker's format, an address of that very
    issue, the issue not linked here already); audited on its initiative or item. False when nothing changed."""
    try:
        trackers.check_link(change.kind, change.key, change.url)
    except trackers.BadLink as exc:
        raise FormInvalid({exc.field: str(exc)}) from None
    initiative = session.get(Initiative, link.initiative_id) if link.initiative_id else None
    item = session.get(Item, link.item_id) if link.item_id else None
    if _linked_already(session, kind=change.kind, key=change.key, initiative=initiative, item=item,
                       other_than=link.id):
        raise FormInvalid({"key": f"{change.key} is linked here already."})
    before = _link_snapshot(link)
    link.kind, link.key, link.url, link.title = change.kind, change.key, change.url, change.title
    link.status, link.done, link.estimate = change.status, change.done, change.estimate
    link.started = link.started or change.done
    changes = audit.diff(before, _link_snapshot(link))
    if not changes:
        return False
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:  # the same key linked by a request that committed meanwhile
        session.expire(link)
        raise FormInvalid({"key": f"{change.key} is linked here already."}) from None
    if {"status", "done"} & set(changes):
        # One status per tracker issue: the issue's other links (other initiatives, items) say the same.
        session.execute(update_rows(BacklogLink).where(
            BacklogLink.kind == link.kind, _key_is(link.kind, link.key), BacklogLink.id != link.id,
        ).values(status=link.status, done=link.done, **({"started": True} if link.started else {}))
            .execution_options(synchronize_session="fetch"))
    audit.record(session, actor=actor, action=AuditAction.backlog_link_updated, entity=initiative or item,
                 changes={f"{link.kind.value} {link.key}: {name}": values for name, values in changes.items()})
    return True


def remove_link(session: Session, *, link: BacklogLink, actor: User) -> None:
    entity = session.get(Initiative, link.initiative_id) if link.initiative_id else session.get(Item, link.item_id)
    audit.record(session, actor=actor, action=AuditAction.backlog_link_removed, entity=entity,
                 changes={"link": [f"{link.kind.value} {link.key}", None]})
    session.delete(link)
    session.flush()


def get_link(session: Session, link_id: int, *, initiative: Initiative | None = None,
             item: Item | None = None) -> BacklogLink:
    link = session.get(BacklogLink, link_id)
    if link is None or (initiative and link.initiative_id != initiative.id) or (item and link.item_id != item.id):
        raise NotFound()
    return link


def links_of_initiatives(session: Session, ids: list[int]) -> dict[int, list[BacklogLink]]:
    out: dict[int, list[BacklogLink]] = {i: [] for i in ids}
    if ids:
        for link in session.scalars(select(BacklogLink).where(BacklogLink.initiative_id.in_(ids))
                                    .order_by(BacklogLink.kind, BacklogLink.key)):
            out[link.initiative_id or 0].append(link)
    return out


def links_of_item(session: Session, item: Item) -> tuple[list[BacklogLink], list[BacklogLink]]:
    """(the item's own links, the links of the live initiatives that deliver it — proposed or active or done)."""
    own = list(session.scalars(select(BacklogLink).where(BacklogLink.item_id == item.id)
                               .order_by(BacklogLink.kind, BacklogLink.key)))
    via = list(session.scalars(
        select(BacklogLink).join(Initiative, Initiative.id == BacklogLink.initiative_id)
        .join(initiative_items, initiative_items.c.initiative_id == Initiative.id)
        .where(initiative_items.c.item_id == item.id, Initiative.status != InitiativeStatus.dropped)
        .order_by(BacklogLink.kind, BacklogLink.key)))
    return own, via


@dataclass(frozen=True, slots=True)
class Progress:
    done: int
    total: int
    by_estimate: bool
    done_estimate: Decimal = Decimal(0)
    total_estimate: Decimal = Decimal(0)
    started: int = 0

    @property
    def percent(self) -> int:
        if self.by_estimate:
            return int(self.done_estimate * 100 / self.total_estimate) if self.total_estimate else 0
        return self.done * 100 // self.total if self.total else 0

    @property
    def rule(self) -> str:
        if not self.total:
            return "No backlog links yet: progress shows once issues are linked."
        if self.by_estimate:
            return (f"By estimate: {_plain(self.done_estimate)} of {_plain(self.total_estimate)} estimated points "
                    f"are done ({self.done} of {self.total} links). Every link has an estimate, so estimates count.")
        return (f"By count: {self.done} of {self.total} links are done. Estimates count only when every "
                "link has one.")


def _plain(value: Decimal) -> str:
    return f"{value.normalize():f}"


def progress_of(links: list[BacklogLink]) -> Progress:
    """Done / total by count, or by estimate when every link has one (a partial set of estimates would
    weigh unestimated work as zero). The same issue linked twice (an item and its initiative) counts once."""
    unique: dict[tuple[str, str], BacklogLink] = {}
    for link in links:
        unique.setdefault((link.kind.value, _folded(link.kind, link.key)), link)
    chosen = list(unique.values())
    done = sum(1 for link in chosen if link.done)
    started = sum(1 for link in chosen if link.started or link.done)
    estimates = [link.estimate for link in chosen]
    if chosen and all(e is not None for e in estimates):
        total_estimate = sum((e for e in estimates if e is not None), Decimal(0))
        if total_estimate > 0:
            done_estimate = sum((link.estimate for link in chosen if link.done and link.estimate is not None),
                                Decimal(0))
            return Progress(done, len(chosen), True, done_estimate, total_estimate, started)
    return Progress(done, len(chosen), False, started=started)


def item_progress(session: Session, item: Item) -> Progress:
    own, via = links_of_item(session, item)
    return progress_of(own + via)


# --- an item's delivery settings ------------------------------------------------------------------------


def get_delivery(session: Session, item: Item) -> ItemDelivery:
    found = session.get(ItemDelivery, item.id)
    return found if found is not None else ItemDelivery(item_id=item.id, show_progress=False)


class DeliveryForm(FormModel):
    show_progress: Annotated[bool, BeforeValidator(lambda v: bool(v))] = False
    started_stage_id: Annotated[int | None, whole_number("Choose a stage, or none.", required=False)] = None
    done_stage_id: Annotated[int | None, whole_number("Choose a stage, or none.", required=False)] = None


@dataclass(frozen=True, slots=True)
class DeliverySaved:
    changed: bool
    moved: str | None = None  # the stage move the saved mapping made at once, in words


def set_delivery(session: Session, *, item: Item, data: DeliveryForm, actor: User) -> DeliverySaved:
    """Save an item's delivery settings. A stage mapping applies at once to the work already under way (the
    links started or all done before it was saved): the move is the PM's, in the history and the audit log,
    as if they had moved the item themselves; later moves, made by a delivery, are the integration's."""
    stage_names = {s.id: s.name for s in roadmap.list_stages(session)}
    stage_ids = set(stage_names)
    errors = {name: "Choose a stage, or none." for name in ("started_stage_id", "done_stage_id")
              if getattr(data, name) is not None and getattr(data, name) not in stage_ids}
    if errors:
        raise FormInvalid(errors)
    delivery = session.get(ItemDelivery, item.id)
    if delivery is None:
        delivery = ItemDelivery(item_id=item.id, show_progress=False)
        session.add(delivery)
    # The history shows stage names (as the PM chose them), not the stages' row ids.
    before = {"public progress": bool(delivery.show_progress),
              "when started": stage_names.get(delivery.started_stage_id or 0),
              "when done": stage_names.get(delivery.done_stage_id or 0)}
    delivery.show_progress = data.show_progress
    delivery.started_stage_id, delivery.done_stage_id = data.started_stage_id, data.done_stage_id
    after = {"public progress": data.show_progress, "when started": stage_names.get(data.started_stage_id or 0),
             "when done": stage_names.get(data.done_stage_id or 0)}
    changes = audit.diff(before, after)
    session.flush()
    if not changes:
        return DeliverySaved(False)
    audit.record(session, actor=actor, action=AuditAction.item_delivery_updated, entity=item, changes=changes)
    moved = None
    if {"when started", "when done"} & set(changes):
        if "stage" not in item.__dict__:  # a caller that loaded the item bare
            session.refresh(item, ["stage"])
        moved = _follow_mapping(session, item=item, delivery=delivery,
                                stages={s.id: s for s in roadmap.list_stages(session)}, actor=actor)
    return DeliverySaved(True, moved)


def public_progress(session: Session, item: Item) -> int | None:
    """The item page's "about N% delivered", when a PM turned it on for this item and it has links; else None.
    Only the number leaves this function: never a key, a title or an address."""
    delivery = session.get(ItemDelivery, item.id)
    if delivery is None or not delivery.show_progress:
        return None
    # Once released, declined or merged the item's stage says it all: a bar (which tracker news may still move,
    # e.g. an issue reopened after the release) would contradict it next to "Released — voting is closed".
    if item.stage.is_closed or item.merged_into_id is not None:
        return None
    progress = item_progress(session, item)
    return progress.percent if progress.total else None


def delivery_regression(item: Item, progress: Progress) -> str | None:
    """What staff should hear when a released item's linked work is no longer all done (an issue reopened after
    the release, or linked since): customers no longer see a bar, but the stage may need a second look. The
    item's stage must be loaded."""
    if not item.stage.is_released or not progress.total or progress.done == progress.total:
        return None
    undone = progress.total - progress.done
    return (f"{item.stage.name}, but {undone} of {progress.total} linked issue{'' if progress.total == 1 else 's'} "
            f"{'is' if undone == 1 else 'are'} not done (reopened or linked after the release?). Customers see "
            f"the stage, not the progress bar; move the item back if the release is not complete.")


def item_regressions(session: Session, items: list[Item]) -> dict[int, str]:
    """delivery_regression for each released item of a list (an initiative's), by item id."""
    found = {}
    for item in items:
        if item.stage.is_released:
            message = delivery_regression(item, item_progress(session, item))
            if message:
                found[item.id] = message
    return found


# --- inbound webhooks -----------------------------------------------------------------------------------


class HookForm(FormModel):
    name: Annotated[str, text(80, required="Give the webhook a name, like “GitHub acme/app”.",
                              one_line="The name is one line.")] = ""
    kind: Annotated[HookKind, choice(HookKind, "Choose where the deliveries come from.")] = HookKind.github
    # A generic hook's tracker (a tracker's own hook updates its own tracker's links only).
    tracker: Annotated[TrackerKind | None, choice(TrackerKind, "Choose the tracker whose issues it reports.",
                                                  empty=None)] = None
    scope: Annotated[str, text(300, one_line="The scope is one line.")] = ""


_HOOK_TRACKER = {HookKind.github: TrackerKind.github, HookKind.gitlab: TrackerKind.gitlab,
                 HookKind.jira: TrackerKind.jira}


def _name_taken(name: str) -> FormInvalid:
    return FormInvalid({"name": f"A webhook named “{name}” exists already: use it, delete it first, "
                                "or choose another name."})


def create_hook(session: Session, *, data: HookForm, actor: User) -> TrackerHook:
    """A new webhook, allowed to update one tracker's links (and only those in its scope, when one is given).
    FormInvalid for a name in use (any letter case: the database's unique index has the last word):
    reloading the page that showed a new webhook's secret re-submits its form, and must not make a second."""
    tracker = _HOOK_TRACKER.get(data.kind, data.tracker)
    if tracker is None:
        raise FormInvalid({"tracker": "Choose the tracker whose issues it reports."})
    try:
        scope = trackers.parse_scope(tracker, data.scope)
    except ValueError as exc:
        raise FormInvalid({"scope": str(exc)}) from None
    if _hook_named(session, data.name):
        raise _name_taken(data.name)
    hook = TrackerHook(public_id=secrets.token_urlsafe(12), kind=data.kind, name=data.name, tracker=tracker,
                       scope=" ".join(scope), salt=secrets.token_urlsafe(24))
    try:
        with session.begin_nested():
            session.add(hook)
            session.flush()
    except IntegrityError:  # the same name made by a request that committed meanwhile
        raise _name_taken(data.name) from None
    audit.record(session, actor=actor, action=AuditAction.tracker_hook_created, entity=hook)
    return hook


def _hook_named(session: Session, name: str) -> bool:
    """The friendly early answer; the unique index on lower(name) is what guarantees it."""
    return session.scalar(select(TrackerHook.id).where(func.lower(TrackerHook.name) == name.lower())) is not None


def hook_reach(hook: TrackerHook) -> str:
    """What a webhook may update, in words (the admin list, and the reason a delivery outside it is ignored)."""
    if hook.tracker is None:
        return "any tracker's issues"
    label = trackers.KIND_LABELS[hook.tracker]
    return f"{label} {', '.join(hook.scope.split())} only" if hook.scope else f"{label} {_WHAT[hook.tracker]} only"


# What a tracker's links may be: GitHub and GitLab links are pull / merge requests too (trackers.recognise).
_WHAT = {TrackerKind.github: "issues and pull requests", TrackerKind.gitlab: "issues and merge requests",
         TrackerKind.jira: "issues", TrackerKind.linear: "issues"}


def delete_hook(session: Session, *, hook: TrackerHook, actor: User) -> None:
    audit.record(session, actor=actor, action=AuditAction.tracker_hook_deleted, entity=hook)
    session.delete(hook)
    session.flush()


def list_hooks(session: Session) -> list[TrackerHook]:
    return list(session.scalars(select(TrackerHook).order_by(TrackerHook.name, TrackerHook.id)))


def get_hook(session: Session, hook_id: int) -> TrackerHook:
    hook = session.get(TrackerHook, hook_id)
    if hook is None:
        raise NotFound()
    return hook


def find_hook(session: Session, *, public_id: str, kind: HookKind) -> TrackerHook | None:
    if len(public_id) > 32:
        return None
    return session.scalar(select(TrackerHook).where(TrackerHook.public_id == public_id, TrackerHook.kind == kind))


_REFUSAL_LOCK = 0x74726566  # PostgreSQL advisory lock class of refusal writers ("tref"), with the hook's id


def record_refusal(session: Session, *, hook_id: int, reason: str) -> bool:
    """Keep a refused delivery's time and reason in its webhook's next slot (the oldest of REFUSALS_KEPT goes),
    in `session`'s own short transaction, committed here; False when it was not recorded.

    Never waits on a lock: the answer is 401 whatever happens here. The webhook's row is not written (a valid
    delivery holds its lock while it runs); refusal writers of one webhook take turns through a PostgreSQL
    advisory lock they only try for; SQLite's busy timeout is 0 for this write (the database's single write lock
    may be a delivery's). A refusal that finds a lock taken is skipped: the server log has it."""
    dialect = session.get_bind().dialect.name
    previous_busy = None
    try:
        if dialect == "postgresql":
            session.execute(sql("SELECT set_config('lock_timeout', '10ms', true)"))
            if not session.scalar(select(func.pg_try_advisory_xact_lock(_REFUSAL_LOCK, hook_id))):
                session.rollback()
                return False
        elif dialect == "sqlite":
            previous_busy = session.scalar(sql("PRAGMA busy_timeout"))
            session.execute(sql("PRAGMA busy_timeout = 0"))
        seq = (session.scalar(select(func.max(TrackerRefusal.seq)).where(TrackerRefusal.hook_id == hook_id)) or 0) + 1
        slot = seq % REFUSALS_KEPT
        session.execute(delete_rows(TrackerRefusal).where(TrackerRefusal.hook_id == hook_id,
                                                          TrackerRefusal.slot == slot))
        session.add(TrackerRefusal(hook_id=hook_id, slot=slot, seq=seq, refused_at=utcnow(), reason=reason[:200]))
        session.commit()
        return True
    except DBAPIError:  # a lock taken (SQLite busy, PostgreSQL lock_timeout), or the webhook deleted meanwhile
        session.rollback()
        return False
    finally:
        if previous_busy is not None:
            session.execute(sql(f"PRAGMA busy_timeout = {int(previous_busy)}"))
            session.rollback()


@dataclass(frozen=True, slots=True)
class Refused:
    """A webhook's refusals: how many there have been, and the latest's time and reason."""

    count: int
    latest_at: Any
    latest_reason: str


def refusals_by_hook(session: Session) -> dict[int, Refused]:
    latest = {}
    for row in session.scalars(select(TrackerRefusal).order_by(TrackerRefusal.hook_id, TrackerRefusal.seq)):
        latest[row.hook_id] = Refused(row.seq, row.refused_at, row.reason)
    return latest


@dataclass(frozen=True, slots=True)
class LogEntry:
    """A line of the webhooks' log: a delivery that passed its checks (matched, ignored) or one refused."""

    at: Any
    hook_name: str
    event: str
    outcome: str  # "Matched", "Ignored", "Refused"
    detail: str


def list_deliveries(session: Session, *, limit: int = 50) -> list[LogEntry]:
    """The latest deliveries, accepted and refused (the last REFUSALS_KEPT of each webhook), newest first."""
    rows = session.execute(select(TrackerDelivery, TrackerHook.name).join(TrackerHook)
                           .order_by(TrackerDelivery.received_at.desc(), TrackerDelivery.id.desc()).limit(limit))
    entries = [LogEntry(d.received_at, name, d.event, "Matched" if d.outcome is DeliveryOutcome.matched else "Ignored",
                        d.detail) for d, name in rows]
    refused = session.execute(select(TrackerRefusal, TrackerHook.name).join(TrackerHook)
                              .order_by(TrackerRefusal.refused_at.desc()).limit(limit))
    entries += [LogEntry(r.refused_at, name, "", "Refused", r.reason) for r, name in refused]
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit]


@dataclass
class Received:
    outcome: DeliveryOutcome
    detail: str
    matched: int = 0
    moved: list[str] = field(default_factory=list)


def receive(session: Session, *, hook: TrackerHook, parsed: trackers.Parsed, delivery_key: str) -> Received:
    """Apply a verified delivery: update the links it names (only with news newer than what they hold),
    then make the stage moves the affected items ask for. Recorded; the same delivery again changes nothing."""
    now = utcnow()
    hook.last_delivery_at = now
    earlier = session.scalar(select(TrackerDelivery.id).where(TrackerDelivery.hook_id == hook.id,
                                                               TrackerDelivery.delivery_key == delivery_key))
    if earlier is not None:
        result = Received(DeliveryOutcome.ignored, "Received before; nothing changed.")
    elif parsed.ignored:
        result = Received(DeliveryOutcome.ignored, parsed.ignored)
    else:
        result = _apply(session, hook=hook, updates=parsed.updates)
    session.add(TrackerDelivery(hook_id=hook.id, delivery_key=delivery_key[:100], event=parsed.event[:80],
                                outcome=result.outcome, detail=result.detail[:500], matched=result.matched,
                                received_at=now))
    session.flush()
    return result


def _apply(session: Session, *, hook: TrackerHook, updates: list[trackers.LinkUpdate]) -> Received:
    changed: list[BacklogLink] = []
    unknown: list[str] = []
    stale: list[str] = []
    undated: list[str] = []
    same: list[str] = []
    outside: list[str] = []
    scope = hook.scope.split()
    for update in updates:
        # A webhook speaks for one tracker (and its scope): a leaked or misused secret reaches no further.
        if (hook.tracker is not None and update.kind != hook.tracker) or not trackers.in_scope(
                update.kind, update.key, scope):
            outside.append(f"{trackers.KIND_LABELS[update.kind]} {update.key}")
            continue
        links = list(session.scalars(select(BacklogLink).where(BacklogLink.kind == update.kind,
                                                               _key_is(update.kind, update.key))
                                     .order_by(BacklogLink.id).with_for_update()))
        if not links:
            unknown.append(update.key)
            continue
        for link in links:
            # Older news than the link holds (out of order, or replayed) loses; so does undated news (a payload
            # without the issue's updated-at) once the link holds dated news: it cannot be shown to be newer.
            if link.tracker_updated_at is not None and update.updated_at is None:
                undated.append(update.key)
                continue
            if link.tracker_updated_at is not None and update.updated_at is not None \
                    and update.updated_at <= link.tracker_updated_at:
                stale.append(update.key)
                continue
            if update.updated_at is not None:
                link.tracker_updated_at = update.updated_at
            status, started = update.status[:80], link.started or update.started or update.done
            if (link.status, link.done, link.started) == (status, update.done, started):
                same.append(update.key)  # a repeat under another delivery id, or an edit of another field
                continue
            link.status, link.done, link.started = status, update.done, started
            if update.title and not link.title:
                link.title = update.title
            changed.append(link)
    session.flush()
    moved = _apply_mappings(session, links=changed, actor=IntegrationActor(f"{hook.name} ({hook.kind.value})"))
    parts = []
    if changed:
        parts.append(f"Updated {', '.join(sorted({link.key for link in changed}))}.")
    if moved:
        parts.append(" ".join(moved))
    if same:
        parts.append(f"Nothing new for {', '.join(sorted(set(same)))}: status and done as known.")
    if stale:
        parts.append(f"Older than what is known, kept: {', '.join(sorted(set(stale)))}.")
    if undated:
        parts.append(f"Undated (no updated-at) while dated news is known, kept: {', '.join(sorted(set(undated)))}.")
    if unknown:
        parts.append(f"Not linked: {', '.join(sorted(set(unknown)))}.")
    if outside:
        parts.append(f"Not this webhook's to update (it updates {hook_reach(hook)}): "
                     f"{', '.join(sorted(set(outside)))}.")
    outcome = DeliveryOutcome.matched if changed else DeliveryOutcome.ignored
    return Received(outcome, " ".join(parts) or "Nothing to change.", len(changed), moved)


def _apply_mappings(session: Session, *, links: list[BacklogLink], actor: IntegrationActor) -> list[str]:
    """The stage moves the changed links ask for, through the same service as a PM's move."""
    if not links:
        return []
    item_ids = {link.item_id for link in links if link.item_id}
    initiative_ids = {link.initiative_id for link in links if link.initiative_id}
    if initiative_ids:
        item_ids |= set(session.scalars(
            select(initiative_items.c.item_id).join(Initiative, Initiative.id == initiative_items.c.initiative_id)
            .where(initiative_items.c.initiative_id.in_(initiative_ids),
                   Initiative.status != InitiativeStatus.dropped)))
    if not item_ids:
        return []
    deliveries = list(session.scalars(select(ItemDelivery).where(
        ItemDelivery.item_id.in_(item_ids),
        or_(ItemDelivery.started_stage_id.is_not(None), ItemDelivery.done_stage_id.is_not(None)))))
    stages = {s.id: s for s in roadmap.list_stages(session)}
    messages = []
    for delivery in deliveries:
        item = session.scalar(select(Item).where(Item.id == delivery.item_id).options(selectinload(Item.stage)))
        if item is None:
            continue
        message = _follow_mapping(session, item=item, delivery=delivery, stages=stages, actor=actor)
        if message:
            messages.append(message)
    return messages


def _follow_mapping(session: Session, *, item: Item, delivery: ItemDelivery, stages: dict[int, Stage],
                    actor: User | IntegrationActor) -> str | None:
    """Move the item where its mapping and its links' progress say (a tracker's delivery, or a PM saving the
    mapping); what was done, in words, or None. The item's stage must be loaded."""
    progress = item_progress(session, item)
    target: Stage | None = None
    if delivery.done_stage_id and progress.total and progress.done == progress.total:
        target = stages.get(delivery.done_stage_id)
    elif delivery.started_stage_id and progress.started:
        target = stages.get(delivery.started_stage_id)
        # "When the first link starts" moves an item forward only: never back from a later stage.
        if target is not None and item.stage.position >= target.position:
            target = None
    if target is None or target.id == item.stage_id:
        return None
    old = item.stage
    roadmap.move_item(session, item=item, stage=target, actor=actor)
    # Its followers hear of it as of a PM's move (neither a tracker nor the settings form offers "Don't notify").
    notify.announce_move(session, item=item, old=old, new=target, actor=actor if isinstance(actor, User) else None,
                         change_id=f"tech-{utcnow().timestamp()}")
    return f"Moved “{item.title}” from {old.name} to {target.name}."


def hook_secret(app_secret: str, hook: TrackerHook) -> str:
    return trackers.derive_secret(app_secret, hook.salt)


# --- import from a tracker's CSV export -----------------------------------------------------------------

IMPORT_MAX_ROWS = 5000
_COLUMNS = {
    "key": ("key", "issue key", "issue", "id", "identifier", "number"),
    "title": ("title", "summary", "name"),
    "status": ("status", "state"),
    "url": ("url", "link", "address", "html_url", "web_url"),
    "initiative": ("initiative", "epic", "epic name", "parent", "project"),
    "kind": ("kind", "tracker"),
    "done": ("done",),
    "estimate": ("estimate", "story points", "points", "weight"),
}
_DONE_WORDS = frozenset({"done", "closed", "resolved", "merged", "completed", "complete", "shipped", "released"})
_STARTED_WORDS = frozenset({"in progress", "in review", "started", "doing", "active", "review", "testing"})
_TRUE = frozenset({"yes", "y", "true", "1", "x"})
_GITHUB_KEY = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+#\d{1,9}$")
_GITLAB_KEY = re.compile(r"^[A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]+)+[#!]\d{1,9}$")


@dataclass(frozen=True, slots=True)
class PlannedLink:
    line: int
    initiative: str
    kind: TrackerKind
    key: str
    url: str
    title: str
    status: str
    done: bool
    started: bool
    estimate: Decimal | None
    exists: bool  # linked to that initiative already: left as it is


@dataclass
class ImportPlan:
    links: list[PlannedLink] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)
    new_initiatives: list[str] = field(default_factory=list)

    @property
    def new_links(self) -> list[PlannedLink]:
        return [link for link in self.links if not link.exists]


def _kind_of(key: str, given: str) -> TrackerKind | None:
    if given:
        try:
            return TrackerKind(given.strip().lower())
        except ValueError:
            return None
    if trackers.JIRA_KEY.match(key):
        return TrackerKind.jira
    if _GITHUB_KEY.match(key):
        return TrackerKind.github
    if _GITLAB_KEY.match(key):
        return TrackerKind.gitlab
    return None


def plan_import(session: Session, text_value: str) -> ImportPlan:
    """What importing this CSV would do, row by row (nothing is written): a dry run, and the import's plan."""
    plan = ImportPlan()
    reader = csv.reader(io.StringIO(text_value.lstrip("\ufeff")))
    try:
        header = next(reader)
    except (StopIteration, csv.Error):
        plan.errors.append((1, "The first line must name the columns: key, title, status, url, initiative."))
        return plan
    names = [h.strip().lower() for h in header]
    where: dict[str, int] = {}
    for column, aliases in _COLUMNS.items():
        for index, name in enumerate(names):
            if name in aliases and column not in where:
                where[column] = index
    if "initiative" not in where or not ({"key", "url"} & set(where)):
        plan.errors.append((1, "The first line must name an initiative column and a key or url column "
                               f"(it names: {', '.join(h for h in header if h.strip())[:200] or 'nothing'})."))
        return plan
    existing = {i.title.casefold(): i for i in session.scalars(select(Initiative))}
    linked = {(initiative_id, kind, _folded(kind, key)) for initiative_id, kind, key in session.execute(
        select(BacklogLink.initiative_id, BacklogLink.kind, BacklogLink.key).where(BacklogLink.initiative_id.is_not(None)))}
    seen: set[tuple[str, TrackerKind, str]] = set()
    new_titles: dict[str, str] = {}
    try:
        rows = list(reader)
    except csv.Error as exc:
        plan.errors.append((reader.line_num, f"The file is not CSV there: {exc}."))
        return plan
    if len(rows) > IMPORT_MAX_ROWS:
        plan.errors.append((1, f"Up to {IMPORT_MAX_ROWS} rows at a time; this has {len(rows)}."))
        return plan
    for number, row in enumerate(rows, start=2):
        if not any(cell.strip() for cell in row):
            continue

        def cell(column: str, row: list[str] = row) -> str:
            index = where.get(column)
            return row[index].strip() if index is not None and index < len(row) else ""

        initiative = " ".join(cell("initiative").split())[:200]
        if not initiative:
            plan.errors.append((number, "No initiative named."))
            continue
        url, key = cell("url")[:2000], cell("key")[:200]
        kind: TrackerKind | None
        ref: trackers.IssueRef | None = None
        if url:
            try:
                ref = trackers.recognise(url)
            except trackers.NotAnIssueUrl:
                ref = None
            if ref is not None:
                kind, key = (_kind_of(key, cell("kind")) if cell("kind") else ref.kind), key or ref.key
                if cell("kind") == "" and ref.key != key:
                    key = ref.key
            else:
                kind = _kind_of(key, cell("kind")) if key else None
        else:
            kind = _kind_of(key, cell("kind")) if key else None
        if url and ref is None:
            plan.errors.append((number, f"“{url[:80]}” is not an issue's address. {trackers.UNRECOGNISED}"))
            continue
        if not key or kind is None:
            plan.errors.append((number, f"Cannot tell the tracker of “{key or url or '(no key)'}”: give its address, or a "
                                        "kind column (github, gitlab, jira, linear)."))
            continue
        try:
            trackers.check_link(kind, key, url)
        except trackers.BadLink as exc:
            plan.errors.append((number, str(exc)))
            continue
        status = cell("status")[:80]
        done = cell("done").lower() in _TRUE if "done" in where and cell("done") else status.lower() in _DONE_WORDS
        estimate_text = cell("estimate")
        try:
            estimate = _estimate(estimate_text) if estimate_text else None
        except ValueError as exc:
            plan.errors.append((number, f"{exc} (“{estimate_text[:20]}”)"))
            continue
        folded = initiative.casefold()
        if (folded, kind, _folded(kind, key)) in seen:
            plan.errors.append((number, f"{key} is listed twice for “{initiative}”."))
            continue
        seen.add((folded, kind, _folded(kind, key)))
        found = existing.get(folded)
        if found is None and folded not in new_titles:
            new_titles[folded] = initiative
            plan.new_initiatives.append(initiative)
        exists = found is not None and (found.id, kind, _folded(kind, key)) in linked
        plan.links.append(PlannedLink(number, new_titles.get(folded, found.title if found else initiative), kind, key,
                                      url, cell("title")[:300], status or ("done" if done else "open"), done,
                                      done or status.lower() in _STARTED_WORDS, estimate, exists))
    if not plan.links and not plan.errors:
        plan.errors.append((2, "No rows under the first line."))
    return plan


def apply_import(session: Session, plan: ImportPlan, *, actor: User) -> tuple[int, int]:
    """Make the plan's new initiatives (proposed, owned by the importer) and links; (initiatives, links) made."""
    if plan.errors:
        raise FormInvalid({"csv": "Fix the rows listed first: nothing is imported while a row is refused."})
    by_title = {i.title.casefold(): i for i in session.scalars(select(Initiative))}
    made = 0
    for title in plan.new_initiatives:
        if title.casefold() not in by_title:
            initiative = Initiative(title=title, description="", owner_id=actor.id, status=InitiativeStatus.proposed,
                                    items=[])
            session.add(initiative)
            session.flush()
            audit.record(session, actor=actor, action=AuditAction.initiative_created, entity=initiative)
            by_title[title.casefold()] = initiative
            made += 1
    links = 0
    for planned in plan.new_links:
        initiative = by_title[planned.initiative.casefold()]
        if session.scalar(select(BacklogLink.id).where(BacklogLink.initiative_id == initiative.id,
                                                       BacklogLink.kind == planned.kind, _key_is(planned.kind, planned.key))):
            continue
        try:
            with session.begin_nested():
                session.add(BacklogLink(initiative_id=initiative.id, kind=planned.kind, key=planned.key,
                                        url=planned.url, title=planned.title, status=planned.status,
                                        done=planned.done, started=planned.started, estimate=planned.estimate))
                session.flush()
        except IntegrityError:  # linked by a request that committed meanwhile: there already, as planned
            continue
        links += 1
    if links:
        audit.record(session, actor=actor, action=AuditAction.backlog_links_imported, entity_type="initiative",
                     label=f"{links} backlog links from a CSV", changes={"links": [None, links]})
    return made, links
