"""How the audit log names what it recorded: record types, actions, fields and values, in words.

The services record actions by name (`audit.record(action="item.moved", ...)`); the staff pages (the
audit log, the overview, an item's history) show these labels.
"""

AUDIT_TYPES = {
    "item": "Items", "product": "Products", "stage": "Stages", "tag": "Tags", "user": "People and staff",
    "invitation": "Invitations", "setting": "Settings", "organisation": "Organisations", "segment": "Segments",
    "comment": "Comments", "feedback": "Feedback",
}
AUDIT_KINDS = {
    "item": "Item", "product": "Product", "stage": "Stage", "tag": "Tag", "user": "Person",
    "invitation": "Invitation", "setting": "Setting", "organisation": "Organisation", "segment": "Segment",
    "comment": "Comment", "feedback": "Feedback",
}
# Every action a service records (audit.record(action=...)), by its full name: the same word means
# different things on different records ("moved" item vs person). tests/admin/test_audit.py fails when
# the code records an action missing here.
AUDIT_VERBS = {
    "item.created": "Created", "item.updated": "Changed", "item.moved": "Moved", "item.published": "Published",
    "item.unpublished": "Unpublished", "item.merged": "Merged into another item",
    "item.merged_in": "Took in a merged item", "item.unmerged": "Merge undone",
    "item.merge_undone": "Merged item split off again", "item.estimated": "RICE estimate changed", "vote.captured": "Vote captured for a customer",
    "product.created": "Created", "product.updated": "Changed", "product.deleted": "Deleted",
    "stage.created": "Created", "stage.updated": "Changed", "stage.deleted": "Deleted",
    "stage.reordered": "Reordered",
    "tag.created": "Created", "tag.updated": "Changed", "tag.deleted": "Deleted",
    "organisation.created": "Created", "organisation.updated": "Changed", "organisation.deleted": "Deleted",
    "segment.created": "Created", "segment.updated": "Changed", "segment.deleted": "Deleted",
    "user.updated": "Changed", "user.deleted": "Deleted their account", "user.moved": "Moved to an organisation",
    "user.password_changed": "Changed password", "user.role_mapped": "Role from sign-in",
    "user.placeholder_created": "Added as a contact (vote captured)",
    "invitation.created": "Invited", "invitation.accepted": "Accepted invitation", "invitation.cancelled": "Cancelled",
    "settings.branding": "Changed", "settings.access": "Changed", "settings.votes": "Changed",
    "settings.desk": "Changed",
    "comment.pinned": "Pinned", "comment.unpinned": "Unpinned", "comment.hidden": "Hidden",
    "comment.restored": "Restored", "comment.reports_dismissed": "Reports dismissed",
    "feedback.linked": "Linked to an item", "feedback.declined": "Declined", "feedback.archived": "Archived",
    "feedback.reopened": "Reopened",
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
    "revenue_cap": "Revenue factor cap (C)",
}
AUDIT_VALUES = {
    "role": {"pm": "Product manager", "admin": "Admin", "customer": "Customer"},
    "visibility": {"public": "Public", "customers": "Signed-in customers", "internal": "Internal"},
    "confidence": {"low": "Low", "medium": "Medium", "high": "High"},
    "revenue_mode": {"off": "Off", "linear": "Linear", "logarithmic": "Logarithmic", "capped": "Capped"},
}
