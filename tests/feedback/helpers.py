"""Shared set-up for the feedback tests: organisations, customers, ideas."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from app.feedback import service as feedback
from app.feedback.models import Feedback
from app.organisations.models import Organisation, Segment
from tests.factories import make_user

XSS_PAYLOADS = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    "<svg onload=alert(1)>",
    '"><script>alert(1)</script>',
    "<a href=\"javascript:alert(1)\">click</a>",
    "[click](javascript:alert(1))",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<body onload=alert(1)>",
    "'\"><img src=x onerror=alert(document.cookie)>",
    "<details open ontoggle=alert(1)>",
]


def make_organisation(session: Session, name: str = "Acme Logistics", *, segment: Segment | None = None) -> Organisation:
    organisation = Organisation(name=name, segment_id=segment.id if segment else None)
    session.add(organisation)
    session.flush()
    return organisation


def make_segment(session: Session, name: str = "Enterprise") -> Segment:
    segment = Segment(slug=name.lower().replace(" ", "-"), name=name)
    session.add(segment)
    session.flush()
    return segment


def make_customer(session: Session, organisation: Organisation | None = None, **overrides: Any):  # type: ignore[no-untyped-def]
    return make_user(session, organisation_id=organisation.id if organisation else None, **overrides)


def make_idea(session: Session, author, title: str = "Export the schedule to Excel", body: str = "",  # type: ignore[no-untyped-def]
              product=None) -> Feedback:  # type: ignore[no-untyped-def]
    data = feedback.parse_idea(session, title=title, body=body, product_id=str(product.id) if product else "")
    return feedback.submit_idea(session, author=author, data=data)


def customer_in_segment(session: Session, segment_name: str | None = None):  # type: ignore[no-untyped-def]
    """A customer without a password in an organisation of its own, in a new segment of that name (or none);
    returns (customer, segment)."""
    segment = make_segment(session, segment_name) if segment_name else None
    organisation = make_organisation(session, f"Org {segment_name}", segment=segment)
    return make_customer(session, organisation, password=None), segment
