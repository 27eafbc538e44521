"""Organisations (customer companies) and segments. All SQL of the domain lives here."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, cast

from pydantic import AfterValidator, BeforeValidator
from sqlalchemy import CursorResult, func, or_, select, update
from sqlalchemy.orm import Session, selectinload
from sqlalchemy.orm.attributes import set_committed_value

from app.accounts.models import Role, User
from app.addresses import normalise_domain, parse_domains
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, refuse, text, whole_number
from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.parsing import parse_int
from app.roadmap import service as roadmap

log = logging.getLogger("ahead.organisations")


def find_by_email_domain(session: Session, email: str) -> Organisation | None:
    """The organisation that owns the email's domain, if any."""
    if "@" not in email:
        return None
    domain = normalise_domain(email.rsplit("@", 1)[1])
    return session.scalar(
        select(Organisation).join(OrganisationDomain).where(OrganisationDomain.domain == domain)
    )


def _segment_for(session: Session, name: str) -> Segment:
    slug = roadmap.slugify(name, 60) or "segment"
    segment = session.scalar(select(Segment).where(Segment.slug == slug))
    if segment is None:
        segment = Segment(slug=slug, name=name.strip()[:80] or slug)
        session.add(segment)
        session.flush()
    return segment


def _revenue(value: Any) -> Decimal | None:
    """A `company.revenue` claim as the column holds it, or None: checked like the admin form's, but a
    value out of range is ignored with a warning for the operator (the host app's data must not stop its
    customer signing in; the organisation keeps the revenue it had)."""
    if value is None or value == "":
        return None
    amount = None
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            amount = Decimal(str(value)).quantize(Decimal("0.01"))
        except InvalidOperation:  # not a number, or too many digits to quantize
            amount = None
    if amount is None or not amount.is_finite() or not 0 <= amount <= MAX_REVENUE:
        log.warning("company.revenue %.60r from the sign-in service ignored: not a number from 0 to %s",
                    value, MAX_REVENUE)
        return None
    return amount


def upsert_from_company(session: Session, company: dict[str, Any]) -> Organisation | None:
    """Create or update the organisation described by a host app's `company` claim."""
    external_id = str(company.get("id") or "").strip()[:120]
    name = str(company.get("name") or "").strip()[:120]
    if not external_id:
        return None
    organisation = session.scalar(
        select(Organisation).where(Organisation.external_id == external_id).options(selectinload(Organisation.segment))
    )
    if organisation is None:
        organisation = Organisation(external_id=external_id, name=name or external_id)
        session.add(organisation)
    elif name:
        organisation.name = name
    segment_name = str(company.get("segment") or "").strip()
    if segment_name and re.search(r"\w", segment_name):
        organisation.segment_id = _segment_for(session, segment_name).id
    revenue = _revenue(company.get("revenue"))
    if revenue is not None:
        organisation.revenue = revenue
    session.flush()
    return organisation


def list_segments(session: Session) -> list[Segment]:
    return list(session.scalars(select(Segment).order_by(Segment.name)))


# --- staff: organisations ------------------------------------------------------------------------------

# A host name: dot-separated labels of letters, digits and inner hyphens, with a dot in it.
MAX_REVENUE = Decimal("999999999999.99")  # what Numeric(14, 2) holds
MAX_SEGMENT_WEIGHT = Decimal("99999.999")  # what Numeric(8, 3) holds


def _parse_revenue(text: Any) -> Decimal:
    cleaned = re.sub(r"[\s,_]", "", str(text or "")).lstrip("$€£")
    if not cleaned:
        return Decimal(0)
    try:
        amount = Decimal(cleaned)
    except InvalidOperation:
        raise refuse("Enter the yearly revenue as a number, like 48000.") from None
    if not amount.is_finite() or amount < 0:
        raise refuse("Revenue cannot be negative (0 if unknown).")
    if amount > MAX_REVENUE:
        raise refuse("That number is too large.")
    return amount.quantize(Decimal("0.01"))


_SEGMENT_GONE = "That segment no longer exists; please choose again."


@dataclass(frozen=True, slots=True)
class OrganisationInput:
    name: str
    domains: list[str]
    segment: Segment | None
    revenue: Decimal


def _domains(value: Any) -> Any:
    """Domains typed one per line or separated by commas: normalised, one per line."""
    if not isinstance(value, str):
        return value
    try:
        return "\n".join(parse_domains(value))
    except FormInvalid as exc:
        raise refuse(exc.errors["domains"]) from None


class OrganisationCreate(FormModel):
    """The organisation form. `domains` comes out normalised, one per line."""

    name: Annotated[str, text(120, required="A name is required.", collapse=True)] = ""
    domains: Annotated[str, text(20_000), AfterValidator(_domains)] = ""
    segment_id: Annotated[int | None, whole_number(_SEGMENT_GONE, required=False)] = None
    revenue: Annotated[Decimal, BeforeValidator(_parse_revenue)] = Decimal(0)


class OrganisationUpdate(OrganisationCreate):
    """The same fields as a new organisation."""


def resolve_organisation(session: Session, data: OrganisationCreate, *,
                         organisation: Organisation | None = None) -> OrganisationInput:
    """The database's side of the organisation form: the name and the domains are not another
    organisation's, the segment still exists. FormInvalid names each field that needs attention.

    A domain belongs to one organisation only (it decides where people who sign in land); a domain
    taken by another organisation is refused with that organisation's name.
    """
    errors: dict[str, str] = {}
    other = organisation.id if organisation is not None else -1
    if data.name and session.scalar(select(Organisation.id).where(
            func.lower(Organisation.name) == data.name.lower(), Organisation.id != other)):
        errors["name"] = f"There is already an organisation called “{data.name}”."
    domains = data.domains.split()
    if domains:
        taken = session.execute(
            select(OrganisationDomain.domain, Organisation.name)
            .join(Organisation, Organisation.id == OrganisationDomain.organisation_id)
            .where(OrganisationDomain.domain.in_(domains), Organisation.id != other)
            .order_by(OrganisationDomain.domain)
        ).all()
        if taken:
            domain, owner = taken[0]
            more = f" (and {len(taken) - 1} more of these domains)" if len(taken) > 1 else ""
            errors["domains"] = (f"{domain} already belongs to {owner}{more}. A domain can belong to one "
                                 "organisation only: remove it there first, or leave it out here.")
    segment = session.get(Segment, data.segment_id) if data.segment_id is not None else None
    if data.segment_id is not None and segment is None:
        errors["segment_id"] = _SEGMENT_GONE
    if errors:
        raise FormInvalid(errors)
    return OrganisationInput(name=data.name, domains=domains, segment=segment, revenue=data.revenue)


def _organisation_snapshot(organisation: Organisation, segment: Segment | None) -> dict[str, Any]:
    return {"name": organisation.name, "domains": [d.domain for d in organisation.domains],
            "segment": segment.name if segment is not None else None,
            "revenue": f"{organisation.revenue:.2f}" if organisation.revenue is not None else None}


def get_organisation(session: Session, organisation_id: int) -> Organisation:
    organisation = session.scalar(
        select(Organisation).where(Organisation.id == organisation_id)
        .options(selectinload(Organisation.domains), selectinload(Organisation.segment))
    )
    if organisation is None:
        raise NotFound()
    return organisation


@dataclass(frozen=True, slots=True)
class OrganisationRow:
    organisation: Organisation
    members: int


def list_organisations(session: Session) -> list[OrganisationRow]:
    """Every organisation with its segment, domains and how many people belong to it."""
    counts = dict(session.execute(
        select(User.organisation_id, func.count())
        .where(User.organisation_id.is_not(None), User.deleted_at.is_(None))
        .group_by(User.organisation_id)
    ).all())
    organisations = session.scalars(
        select(Organisation)
        .options(selectinload(Organisation.domains), selectinload(Organisation.segment))
        .order_by(func.lower(Organisation.name), Organisation.id)
    )
    return [OrganisationRow(o, counts.get(o.id, 0)) for o in organisations]


def list_organisation_choices(session: Session) -> list[tuple[int, str]]:
    """(id, name) of every organisation, for "move to" menus."""
    return [(i, n) for i, n in session.execute(
        select(Organisation.id, Organisation.name).order_by(func.lower(Organisation.name), Organisation.id))]


def _set_domains(session: Session, organisation: Organisation, domains: list[str]) -> None:
    wanted = set(domains)
    for row in list(organisation.domains):
        if row.domain not in wanted:
            organisation.domains.remove(row)
    # Removals first, so a domain moved between spellings never meets itself on the unique key.
    session.flush()
    have = {row.domain for row in organisation.domains}
    for domain in domains:
        if domain not in have:
            organisation.domains.append(OrganisationDomain(domain=domain))


def create_organisation(session: Session, *, data: OrganisationInput, actor: Any) -> Organisation:
    organisation = Organisation(name=data.name, segment_id=data.segment.id if data.segment else None,
                                revenue=data.revenue, domains=[])
    session.add(organisation)
    _set_domains(session, organisation, data.domains)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.organisation_created, entity=organisation,
                 changes=audit.diff({}, _organisation_snapshot(organisation, data.segment)))
    return organisation


def update_organisation(session: Session, *, organisation: Organisation, data: OrganisationInput,
                        actor: Any) -> bool:
    """Save the form; False when nothing changed."""
    before = _organisation_snapshot(organisation, organisation.segment)
    organisation.name = data.name
    organisation.segment_id = data.segment.id if data.segment else None
    set_committed_value(organisation, "segment", data.segment)
    organisation.revenue = data.revenue
    _set_domains(session, organisation, data.domains)
    session.flush()
    changes = audit.diff(before, _organisation_snapshot(organisation, data.segment))
    if changes:
        audit.record(session, actor=actor, action=AuditAction.organisation_updated, entity=organisation, changes=changes)
    return bool(changes)


def delete_organisation(session: Session, *, organisation: Organisation, actor: Any) -> int:
    """Delete it; its members keep their accounts without an organisation. Returns how many there were."""
    members = cast(CursorResult[Any], session.execute(
        update(User).where(User.organisation_id == organisation.id).values(organisation_id=None)
        .execution_options(synchronize_session=False)
    )).rowcount or 0
    for user in session.identity_map.values():
        if isinstance(user, User) and user.organisation_id == organisation.id:
            set_committed_value(user, "organisation_id", None)
    audit.record(session, actor=actor, action=AuditAction.organisation_deleted, entity=organisation,
                 changes={"name": [organisation.name, None], "members": [members, 0]})
    session.delete(organisation)
    session.flush()
    return members


# --- staff: people (customers) and their organisation ------------------------------------------------


def list_members(session: Session, *, organisation: Organisation) -> list[User]:
    return list(session.scalars(
        select(User).where(User.organisation_id == organisation.id, User.deleted_at.is_(None))
        .order_by(func.lower(User.email))
    ))


NO_ORGANISATION = "none"
PEOPLE_PER_PAGE = 50


def list_customers(session: Session, *, q: str = "", organisation: str = "", page: int = 1,
                   per_page: int = PEOPLE_PER_PAGE) -> tuple[list[User], int]:
    """Customers (not staff, not deleted), filtered by email or name and by organisation.

    `organisation` is an organisation id, NO_ORGANISATION for people without one, or "" for everyone.
    Each user comes with `organisation` (and its segment) loaded.
    """
    stmt = select(User).where(User.role == Role.customer, User.deleted_at.is_(None))
    words = q.strip().lower().split()
    for word in words[:5]:
        pattern = "%" + word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
        stmt = stmt.where(or_(func.lower(User.email).like(pattern, escape="\\"),
                              func.lower(User.display_name).like(pattern, escape="\\")))
    if organisation == NO_ORGANISATION:
        stmt = stmt.where(User.organisation_id.is_(None))
    elif (number := parse_int(organisation, minimum=1)) is not None:
        stmt = stmt.where(User.organisation_id == number)
    total = session.scalar(stmt.with_only_columns(func.count()).order_by(None)) or 0
    users = session.scalars(
        stmt.options(selectinload(User.organisation).selectinload(Organisation.segment))
        .order_by(func.lower(User.email), User.id).offset((page - 1) * per_page).limit(per_page)
    )
    return list(users), total


def get_customer(session: Session, user_id: int) -> User:
    """A customer account (staff accounts live on the staff page), with its organisation loaded."""
    user = session.scalar(
        select(User).where(User.id == user_id, User.role == Role.customer, User.deleted_at.is_(None))
        .options(selectinload(User.organisation).selectinload(Organisation.segment))
    )
    if user is None:
        raise NotFound()
    return user


def move_person(session: Session, *, user: User, organisation: Organisation | None, actor: Any) -> bool:
    """Put a person in another organisation (or in none); False when they were already there.

    What they can see follows at once: visibility reads the organisation's segment on every request.
    """
    if user.organisation_id == (organisation.id if organisation is not None else None):
        return False
    before = session.get(Organisation, user.organisation_id) if user.organisation_id else None
    user.organisation_id = organisation.id if organisation is not None else None
    set_committed_value(user, "organisation", organisation)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.user_moved, entity=user,
                 changes={"organisation": [before.name if before else None,
                                           organisation.name if organisation else None]})
    return True


# --- staff: segments ---------------------------------------------------------------------------------


def get_segment(session: Session, segment_id: int) -> Segment:
    segment = session.get(Segment, segment_id)
    if segment is None:
        raise NotFound()
    return segment


def count_organisations_per_segment(session: Session) -> dict[int, int]:
    rows = session.execute(select(Organisation.segment_id, func.count())
                           .where(Organisation.segment_id.is_not(None)).group_by(Organisation.segment_id))
    return {segment_id: n for segment_id, n in rows if segment_id is not None}  # (the WHERE says so)


def _parse_weight(text: Any) -> Decimal:
    cleaned = str(text or "").strip().replace(",", ".")
    if not cleaned:
        return Decimal(1)
    try:
        weight = Decimal(cleaned)
    except InvalidOperation:
        raise refuse("Enter the weight as a number, like 1 or 2.5.") from None
    if not weight.is_finite() or weight <= 0:
        raise refuse("The weight must be more than 0.")
    if weight > MAX_SEGMENT_WEIGHT:
        raise refuse("Keep the weight below 100,000.")
    if weight != weight.quantize(Decimal("0.001")):
        raise refuse("Use at most three decimals.")
    return weight.quantize(Decimal("0.001"))


class SegmentCreate(FormModel):
    name: Annotated[str, text(80, required="A name is required.", collapse=True)] = ""
    weight: Annotated[Decimal, BeforeValidator(_parse_weight)] = Decimal(1)


class SegmentUpdate(SegmentCreate):
    """The same fields as a new segment."""


@dataclass(frozen=True, slots=True)
class SegmentInput:
    name: str
    weight: Decimal


def resolve_segment(session: Session, data: SegmentCreate, *, segment: Segment | None = None) -> SegmentInput:
    """A validated segment form whose name no other segment has; FormInvalid otherwise."""
    if data.name and session.scalar(select(Segment.id).where(
            func.lower(Segment.name) == data.name.lower(), Segment.id != (segment.id if segment is not None else -1))):
        raise FormInvalid({"name": f"There is already a segment called “{data.name}”."})
    return SegmentInput(name=data.name, weight=data.weight)


def _unique_segment_slug(session: Session, name: str, *, exclude_id: int | None = None) -> str:
    base = roadmap.slugify(name, 50) or "segment"
    slug, n = base, 2
    while session.scalar(select(Segment.id).where(Segment.slug == slug,
                                                  Segment.id != (exclude_id if exclude_id is not None else -1))):
        slug, n = f"{base}-{n}", n + 1
    return slug


def _weight_text(weight: Decimal) -> str:
    return format(weight.normalize(), "f") if weight is not None else ""


def create_segment(session: Session, *, data: SegmentInput, actor: Any) -> Segment:
    clean, value = data.name, data.weight
    segment = Segment(name=clean, weight=value, slug=_unique_segment_slug(session, clean))
    session.add(segment)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.segment_created, entity=segment,
                 changes={"name": [None, clean], "weight": [None, _weight_text(value)]})
    return segment


def update_segment(session: Session, *, segment: Segment, data: SegmentInput, actor: Any) -> bool:
    """Rename or reweigh; the slug stays (host-app SSO tokens may name the segment by it). False: no change."""
    clean, value = data.name, data.weight
    before = {"name": segment.name, "weight": _weight_text(segment.weight)}
    segment.name, segment.weight = clean, value
    changes = audit.diff(before, {"name": clean, "weight": _weight_text(value)})
    if changes:
        session.flush()
        audit.record(session, actor=actor, action=AuditAction.segment_updated, entity=segment, changes=changes)
    return bool(changes)


@dataclass(frozen=True, slots=True)
class SegmentDeletion:
    organisations: int
    items: int
    opened: list[str]  # titles of items that were limited to this segment only


def delete_segment(session: Session, *, segment: Segment, actor: Any) -> SegmentDeletion:
    """Delete it: its organisations keep no segment, and items lose this segment from their limit.

    An item limited to this segment only has no limit left afterwards, so every signed-in customer
    can see it; the confirmation page names those items before anyone presses the button.
    """
    opened = [item.title for item in roadmap.list_items_limited_only_to(session, segment=segment)]
    items = roadmap.count_items_per_segment(session).get(segment.id, 0)
    organisations = cast(CursorResult[Any], session.execute(
        update(Organisation).where(Organisation.segment_id == segment.id).values(segment_id=None)
        .execution_options(synchronize_session=False)
    )).rowcount or 0
    for obj in session.identity_map.values():
        if isinstance(obj, Organisation) and obj.segment_id == segment.id:
            set_committed_value(obj, "segment_id", None)
    audit.record(session, actor=actor, action=AuditAction.segment_deleted, entity=segment,
                 changes={"name": [segment.name, None], "organisations": [organisations, 0],
                          "items": [items, 0]})
    # The items' link rows go with it (ON DELETE CASCADE on item_segments).
    session.delete(segment)
    session.flush()
    return SegmentDeletion(organisations=organisations, items=items, opened=opened)
