"""Imports every domain's models so that Base.metadata is complete (Alembic, tests)."""

from app.accounts.models import ApiToken, Identity, Invitation, MagicLink, UsedToken, User, UserSession
from app.audit.models import AuditEvent
from app.changelog.models import ChangelogEntry, changelog_entry_items
from app.db import Base
from app.desk.models import Decision, DeskDay, DeskItemOrg, DeskSpan, DeskState, DeskWindow
from app.discussion.models import Comment, CommentReport
from app.feedback.models import Feedback
from app.notify.models import DigestEntry, NotificationPreference
from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.outbox.models import OutboxJob
from app.portal.models import PortalAsset, PortalSetting
from app.revision import ContentRevision
from app.roadmap.models import Item, Product, Stage, StageChange, Tag, item_segments, item_tags
from app.tech.models import (
    BacklogLink,
    Initiative,
    ItemDelivery,
    TrackerDelivery,
    TrackerHook,
    initiative_items,
)
from app.voting.models import Follow, Merge, Vote
from app.webhooks.models import WebhookDelivery, WebhookEndpoint

metadata = Base.metadata

__all__ = [
    "ApiToken",
    "AuditEvent",
    "BacklogLink",
    "ChangelogEntry",
    "Comment",
    "CommentReport",
    "ContentRevision",
    "Decision",
    "DeskDay",
    "DeskItemOrg",
    "DeskSpan",
    "DeskState",
    "DeskWindow",
    "DigestEntry",
    "Feedback",
    "Follow",
    "Identity",
    "Initiative",
    "Invitation",
    "Item",
    "ItemDelivery",
    "MagicLink",
    "Merge",
    "NotificationPreference",
    "Organisation",
    "OrganisationDomain",
    "OutboxJob",
    "PortalAsset",
    "PortalSetting",
    "Product",
    "Segment",
    "Stage",
    "StageChange",
    "Tag",
    "TrackerDelivery",
    "TrackerHook",
    "UsedToken",
    "User",
    "UserSession",
    "Vote",
    "WebhookDelivery",
    "WebhookEndpoint",
    "changelog_entry_items",
    "initiative_items",
    "item_segments",
    "item_tags",
    "metadata",
]
