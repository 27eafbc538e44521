"""Visibility: the one place that decides who sees which item.

Every read that a non-staff person can reach starts from `visible_items(viewer)`: pages, the API, feeds,
search, counts and the vote's item lookup. app.roadmap.service names both functions too.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select, true

from app.accounts.models import STAFF_ROLES, User
from app.accounts.viewer import Viewer
from app.organisations.models import Organisation
from app.roadmap.models import Item, Visibility, item_segments


def visible_items(viewer: Viewer) -> Select[Item]:
    """Items this viewer may see, the one rule behind every page, feed, search, count and API call.

    Staff see everything. Everyone else sees published, unmerged items that are public; signed-in
    customers of an organisation also see `customers` items open to every customer or to their segment.
    """
    stmt = select(Item).where(Item.merged_into_id.is_(None))
    if viewer.is_staff:
        return stmt
    stmt = stmt.where(Item.published_at.is_not(None))
    # Anyone can get an email sign-in link, so being signed in is not enough: customer-only items are
    # for people who belong to a customer organisation.
    if viewer.user is None or not viewer.is_authenticated or viewer.user.organisation_id is None:
        return stmt.where(Item.visibility == Visibility.public)
    restricted = exists().where(item_segments.c.item_id == Item.id)
    segment_ok = ~restricted
    if viewer.segment_id is not None:
        segment_ok = or_(segment_ok, exists().where(item_segments.c.item_id == Item.id,
                                                    item_segments.c.segment_id == viewer.segment_id))
    return stmt.where(or_(Item.visibility == Visibility.public,
                          and_(Item.visibility == Visibility.customers, segment_ok)))


def audience(viewer: Viewer) -> tuple[str, object] | None:
    """What `visible_items` and the vote widgets depend on, as a cache key; None for staff (never cached).

    People with the same audience see the same items: signed out or without an organisation (public
    items; signed-in people get vote forms instead of a sign-in link), or a customer of an organisation
    in a given segment (or in none).
    """
    if viewer.is_staff:
        return None
    if viewer.user is None or not viewer.is_authenticated or viewer.user.organisation_id is None:
        return ("public", viewer.user is not None)
    return ("customer", viewer.segment_id)


def readers_of(item: Item) -> ColumnElement[bool]:
    """A condition on `User` rows: the people who may see this item, by the rule `visible_items` applies.

    For telling many people about one item in one statement (the followers of an item), instead of asking
    `visible_items` once per person. Staff see everything; nobody else sees a draft, a merged or an internal
    item; everyone sees a public one; a `customers` item is seen by members of an organisation, of one of its
    segments when it names any. Whether the account is active is the caller's concern.
    """
    staff = User.role.in_(STAFF_ROLES)
    if item.merged_into_id is not None or item.published_at is None or item.visibility is Visibility.internal:
        return staff
    if item.visibility is Visibility.public:
        return true()
    limited = exists().where(item_segments.c.item_id == item.id)
    in_segment = exists().where(item_segments.c.item_id == item.id, Organisation.id == User.organisation_id,
                                Organisation.segment_id == item_segments.c.segment_id)
    return or_(staff, and_(User.organisation_id.is_not(None), or_(~limited, in_segment)))
