"""Imports every domain's models so that Base.metadata is complete (Alembic, tests)."""

from app.accounts.models import Invitation, User, UserSession
from app.audit.models import AuditEvent
from app.db import Base
from app.portal.models import PortalAsset, PortalSetting
from app.roadmap.models import Item, Product, SearchTerm, Stage, StageChange, Tag, item_tags

metadata = Base.metadata

__all__ = [
    "AuditEvent", "Invitation", "Item", "PortalAsset", "PortalSetting", "Product", "SearchTerm",
    "Stage", "StageChange", "Tag", "User", "UserSession", "item_tags", "metadata",
]
