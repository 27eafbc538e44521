"""Organisations (customer companies) and segments. All SQL of the domain lives here."""

from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from app.organisations.models import Organisation, OrganisationDomain, Segment


def normalise_domain(domain: str) -> str:
    return domain.strip().lower().lstrip("@").rstrip(".")


def find_by_email_domain(session: Session, email: str) -> Organisation | None:
    """The organisation that owns the email's domain, if any."""
    if "@" not in email:
        return None
    domain = normalise_domain(email.rsplit("@", 1)[1])
    return session.scalar(
        select(Organisation).join(OrganisationDomain).where(OrganisationDomain.domain == domain)
    )


def _segment_for(session: Session, name: str) -> Segment:
    from app.roadmap.service import slugify

    slug = slugify(name, 60) or "segment"
    segment = session.scalar(select(Segment).where(Segment.slug == slug))
    if segment is None:
        segment = Segment(slug=slug, name=name.strip()[:80] or slug)
        session.add(segment)
        session.flush()
    return segment


def _revenue(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        return None
    return amount if amount.is_finite() and amount >= 0 else None


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
