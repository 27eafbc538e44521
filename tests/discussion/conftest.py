"""Helpers for the discussion tests."""

from __future__ import annotations

import re

from app.accounts.viewer import Viewer
from app.discussion import service as discussion
from app.discussion.models import Comment


def comment(session, item, author, body: str = "A comment", parent: Comment | None = None) -> Comment:  # type: ignore[no-untyped-def]
    """A comment written through the service, as the author."""
    return discussion.create_comment(session, viewer=Viewer(user=author), item=item, body=body,
                                     parent_public_id=parent.public_id if parent else None)


def comment_ids(html: str) -> list[str]:
    """The comment anchors on a page, in page order."""
    return re.findall(r'<article class="comment[^"]*" id="comment-([a-z0-9]+)"', html)
