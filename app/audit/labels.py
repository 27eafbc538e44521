"""How the audit log names what it recorded: record types, actions, fields and values, in words.

The services record an `AuditAction` (`audit.record(action=AuditAction.item_moved, ...)`); the staff pages
(the audit log, the overview, an item's history) show these labels. An action's verb is keyed by the enum;
the `audit_events.action` column holds its value, a plain string, and a StrEnum member looks up the same as
its value, so templates look rows up in AUDIT_VERBS directly.
"""

from __future__ import annotations

from typing import Any

from app.audit.actions import AuditAction

AUDIT_TYPES = {
    "item": "Items", "product": "Products", "stage": "Stages", "tag": "Tags", "user": "People and staff",
    "invitation": "Invitations", "setting": "Settings", "organisation": "Organisations", "segment": "Segments",
    "comment": "Comments", "feedback": "Feedback", "changelog": "Changelog", "webhook": "Webhooks",
    "initiative": "Initiatives", "tracker_hook": "Tracker webhooks",
    "api_token": "API tokens",  # nosec B105 # a record type's name, not a token
}
AUDIT_KINDS = {
    "item": "Item", "product": "Product", "stage": "Stage", "tag": "Tag", "user": "Person",
    "invitation": "Invitation", "setting": "Setting", "organisation": "Organisation", "segment": "Segment",
    "comment": "Comment", "feedback": "Feedback", "changelog": "Changelog entry", "webhook": "Webhook",
    "initiative": "Initiative", "tracker_hook": "Tracker webhook",
    "api_token": "API token",  # nosec B105 # a record type's name, not a token
}
# Every action (audit.record(action=...)): the same word means different things on different records
# ("moved" item vs person). tests/admin/test_audit.py fails when a member of AuditAction has no verb here.
AUDIT_VERBS: dict[AuditAction, str] = {
    AuditAction.item_created: "Created",
    AuditAction.item_updated: "Changed",
    AuditAction.item_moved: "Moved",
    AuditAction.item_published: "Published",
    AuditAction.item_unpublished: "Unpublished",
    AuditAction.item_merged: "Merged into another item",
    AuditAction.item_merged_in: "Took in a merged item",
    AuditAction.item_unmerged: "Merge undone",
    AuditAction.item_merge_undone: "Merged item split off again",
    AuditAction.item_estimated: "RICE estimate changed",
    AuditAction.item_decision_recorded: "Decision recorded",
    AuditAction.item_delivery_updated: "Delivery settings changed",
    AuditAction.initiative_created: "Created",
    AuditAction.initiative_updated: "Changed",
    AuditAction.initiative_deleted: "Deleted",
    AuditAction.initiative_item_linked: "Linked to an item",
    AuditAction.initiative_item_unlinked: "Unlinked from an item",
    AuditAction.backlog_link_added: "Backlog link added",
    AuditAction.backlog_link_removed: "Backlog link removed",
    AuditAction.backlog_link_updated: "Backlog link changed",
    AuditAction.backlog_links_imported: "Backlog links imported from a CSV",
    AuditAction.tracker_hook_created: "Created",
    AuditAction.tracker_hook_deleted: "Deleted",
    AuditAction.vote_captured: "Vote captured for a customer",
    AuditAction.product_created: "Created",
    AuditAction.product_updated: "Changed",
    AuditAction.product_deleted: "Deleted",
    AuditAction.stage_created: "Created",
    AuditAction.stage_updated: "Changed",
    AuditAction.stage_deleted: "Deleted",
    AuditAction.stage_reordered: "Reordered",
    AuditAction.tag_created: "Created",
    AuditAction.tag_updated: "Changed",
    AuditAction.tag_deleted: "Deleted",
    AuditAction.organisation_created: "Created",
    AuditAction.organisation_updated: "Changed",
    AuditAction.organisation_deleted: "Deleted",
    AuditAction.segment_created: "Created",
    AuditAction.segment_updated: "Changed",
    AuditAction.segment_deleted: "Deleted",
    AuditAction.user_updated: "Changed",
    AuditAction.user_deleted: "Deleted their account",
    AuditAction.user_moved: "Moved to an organisation",
    AuditAction.user_password_changed: "Changed password",
    AuditAction.user_role_mapped: "Role from sign-in",
    AuditAction.user_placeholder_created: "Added as a contact (vote captured)",
    AuditAction.invitation_created: "Invited",
    AuditAction.invitation_accepted: "Accepted invitation",
    AuditAction.invitation_cancelled: "Cancelled",
    AuditAction.settings_branding: "Changed",
    AuditAction.settings_access: "Changed",
    AuditAction.settings_votes: "Changed",
    AuditAction.settings_desk: "Changed",
    AuditAction.settings_digest: "Changed",
    AuditAction.comment_pinned: "Pinned",
    AuditAction.comment_unpinned: "Unpinned",
    AuditAction.comment_hidden: "Hidden",
    AuditAction.comment_restored: "Restored",
    AuditAction.comment_reports_dismissed: "Reports dismissed",
    AuditAction.feedback_linked: "Linked to an item",
    AuditAction.feedback_declined: "Declined",
    AuditAction.feedback_archived: "Archived",
    AuditAction.feedback_reopened: "Reopened",
    AuditAction.api_token_created: "Created",
    AuditAction.api_token_revoked: "Revoked",
    AuditAction.changelog_created: "Written",
    AuditAction.changelog_updated: "Changed",
    AuditAction.changelog_deleted: "Deleted",
    AuditAction.settings_webhooks: "Changed",
    AuditAction.webhook_created: "Added",
    AuditAction.webhook_updated: "Changed",
    AuditAction.webhook_deleted: "Deleted",
    AuditAction.webhook_secret_rotated: "New signing secret",
    AuditAction.webhook_disabled: "Turned off after failing for three days",
}
AUDIT_FIELDS = {
    "is_released": "Counts as released", "is_closed": "Closed (no votes)", "on_board": "Board column",
    "is_active": "Active", "accent_color": "Accent colour", "portal_name": "Portal name",
    "product_name": "Product name", "product_url": "Product link", "logo_version": "Logo",
    "internal_notes": "Internal notes", "release_notes": "Release notes",
    "private_mode": "Private portal", "groups_claim": "Groups claim",
    "admin.emails": "Admin emails", "admin.domains": "Admin email domains", "admin.groups": "Admin groups",
    "pm.emails": "PM emails", "pm.domains": "PM email domains", "pm.groups": "PM groups",
    "revenue": "Revenue (ARR)", "hide_counts": "Hide vote counts from customers",
    "rice_confidence": "RICE confidence (%)", "effort": "Effort (person-months)",
    "nice_to_have": "Weight of “Nice to have”", "important": "Weight of “Important”",
    "critical": "Weight of “Critical”", "revenue_mode": "Revenue weighting", "revenue_unit": "Revenue unit (U)",
    "revenue_cap": "Revenue factor cap (C)", "source": "Source", "source_url": "Source link",
    "why": "Why", "scope": "Scope", "expires_at": "Expires", "owner": "Owner",
    "notes": "Notes", "items": "Items", "published_at": "Published at",
    "weekday": "Digest day", "hour": "Digest hour", "timezone": "Portal time zone",
    "allow_private": "Allow private addresses", "url": "Address", "events": "Events",
}
AUDIT_VALUES = {
    "role": {"pm": "Product manager", "admin": "Admin", "customer": "Customer"},
    "visibility": {"public": "Public", "customers": "Signed-in customers", "internal": "Internal"},
    "confidence": {"low": "Low", "medium": "Medium", "high": "High"},
    "revenue_mode": {"off": "Off", "linear": "Linear", "logarithmic": "Logarithmic", "capped": "Capped"},
    # A captured vote's source (CaptureSource): the capture form's own labels (feedback.SOURCE_NAMES; a test
    # keeps the two the same).
    "scope": {"read": "Read", "write": "Read and write"},
    "source": {"call": "Call", "ticket": "Support ticket", "meeting": "Meeting", "email": "Email"},
}


def audit_labels() -> dict[str, Any]:
    """The labels the staff pages' templates name audit events with."""
    return {"audit_types": AUDIT_TYPES, "audit_kinds": AUDIT_KINDS, "audit_verbs": AUDIT_VERBS,
            "audit_fields": AUDIT_FIELDS, "audit_values": AUDIT_VALUES}
