"""What the audit log records: one name per kind of staff change.

Services pass a member to `audit.record(action=...)`; the value is what the `audit_events.action` column
stores, so the values never change (old rows must still read). Each has its words in app/audit/labels.py.
"""

from __future__ import annotations

from enum import StrEnum


class AuditAction(StrEnum):
    item_created = "item.created"
    item_updated = "item.updated"
    item_moved = "item.moved"
    item_published = "item.published"
    item_unpublished = "item.unpublished"
    item_merged = "item.merged"
    item_merged_in = "item.merged_in"
    item_unmerged = "item.unmerged"
    item_merge_undone = "item.merge_undone"
    item_estimated = "item.estimated"
    item_decision_recorded = "item.decision_recorded"
    vote_captured = "vote.captured"
    product_created = "product.created"
    product_updated = "product.updated"
    product_deleted = "product.deleted"
    stage_created = "stage.created"
    stage_updated = "stage.updated"
    stage_deleted = "stage.deleted"
    stage_reordered = "stage.reordered"
    tag_created = "tag.created"
    tag_updated = "tag.updated"
    tag_deleted = "tag.deleted"
    organisation_created = "organisation.created"
    organisation_updated = "organisation.updated"
    organisation_deleted = "organisation.deleted"
    segment_created = "segment.created"
    segment_updated = "segment.updated"
    segment_deleted = "segment.deleted"
    user_updated = "user.updated"
    user_deleted = "user.deleted"
    user_moved = "user.moved"
    user_password_changed = "user.password_changed"  # nosec B105 # an audit action name, not a password
    user_role_mapped = "user.role_mapped"
    user_placeholder_created = "user.placeholder_created"
    invitation_created = "invitation.created"
    invitation_accepted = "invitation.accepted"
    invitation_cancelled = "invitation.cancelled"
    settings_branding = "settings.branding"
    settings_access = "settings.access"
    settings_votes = "settings.votes"
    settings_desk = "settings.desk"
    settings_digest = "settings.digest"
    comment_pinned = "comment.pinned"
    comment_unpinned = "comment.unpinned"
    comment_hidden = "comment.hidden"
    comment_restored = "comment.restored"
    comment_reports_dismissed = "comment.reports_dismissed"
    feedback_linked = "feedback.linked"
    feedback_declined = "feedback.declined"
    feedback_archived = "feedback.archived"
    feedback_reopened = "feedback.reopened"
    api_token_created = "api_token.created"  # nosec B105 # an audit action name, not a token
    api_token_revoked = "api_token.revoked"  # nosec B105 # an audit action name, not a token
    changelog_created = "changelog.created"
    changelog_updated = "changelog.updated"
    changelog_deleted = "changelog.deleted"
    initiative_created = "initiative.created"
    initiative_updated = "initiative.updated"
    initiative_deleted = "initiative.deleted"
    initiative_item_linked = "initiative.item_linked"
    initiative_item_unlinked = "initiative.item_unlinked"
    backlog_link_added = "backlog_link.added"
    backlog_link_removed = "backlog_link.removed"
    backlog_link_updated = "backlog_link.updated"
    backlog_links_imported = "backlog_link.imported"
    item_delivery_updated = "item.delivery_updated"
    tracker_hook_created = "tracker_hook.created"
    tracker_hook_deleted = "tracker_hook.deleted"
    settings_webhooks = "settings.webhooks"
    webhook_created = "webhook.created"
    webhook_updated = "webhook.updated"
    webhook_deleted = "webhook.deleted"
    webhook_secret_rotated = "webhook.secret_rotated"  # nosec B105 # an audit action name, not a secret
    webhook_disabled = "webhook.disabled"


class IntegrationActor:
    """Who a tracker webhook's changes are made by, in the audit log and an item's stage history: no user,
    a label ("integration: GitHub acme/app (github)")."""

    id: None = None

    def __init__(self, name: str) -> None:
        self.name = name

    @property
    def email(self) -> str:  # what audit.record writes as the actor's label
        return f"integration: {self.name}"
