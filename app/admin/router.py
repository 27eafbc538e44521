"""The staff area: one router under /admin behind one staff dependency, including one router per area.

Every route here needs a staff member (`require_staff`: anyone else gets the 404 of a missing page) and a
valid CSRF token on unsafe methods. Overview, the prioritisation desk, the decisions on record, products, stages, tags, customers, items, the feedback inbox,
merging, moderation, the technology roadmap, the changelog and API tokens (each their own; admins everyone's) are
open to every staff member; staff accounts, settings, access, email, webhooks, the desk's weights and the audit log to
admins only (each of those routes takes `AdminUser`: a PM gets the same 404 as for a missing page).
"""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.admin import (
    access,
    audit,
    changelog,
    customers,
    dashboard,
    decisions,
    delivery,
    desk,
    feedback,
    items,
    merge,
    moderation,
    settings,
    staff,
    taxonomy,
    tech,
    tokens,
    webhooks,
)
from app.deps import require_staff
from app.security import verify_csrf

router = APIRouter(include_in_schema=False, dependencies=[Depends(require_staff), Depends(verify_csrf)])

# In the order routes are matched in. The prefix is given here rather than to `router` because the overview's
# own path is "" (it answers /admin itself), and FastAPI refuses to include an empty path without a prefix.
for area in (dashboard, desk, decisions, taxonomy, staff, settings, delivery, audit, customers, access, feedback, tech,
             items, merge, moderation, changelog, tokens, webhooks):
    router.include_router(area.router, prefix="/admin")
