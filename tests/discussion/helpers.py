"""Helpers for the discussion tests."""

from __future__ import annotations

import re
from datetime import timedelta

from app.accounts.viewer import Viewer
from app.db import utcnow
from app.discussion import service as discussion
from app.discussion.models import Comment
from tests.helpers.http import post_form


def comment(session, item, author, body: str = "A comment", parent: Comment | None = None) -> Comment:  # type: ignore[no-untyped-def]
    """A comment written through the service, as the author."""
    return discussion.create_comment(session, viewer=Viewer(user=author), item=item, body=body,
                                     parent_public_id=parent.public_id if parent else None)


def comment_ids(html: str) -> list[str]:
    """The comment anchors on a page, in page order."""
    return re.findall(r'<article class="comment[^"]*" id="comment-([a-z0-9]+)"', html)


def many_comments(session, item, author, n: int, *, prefix: str = "Comment") -> list[Comment]:  # type: ignore[no-untyped-def]
    """`n` top-level comments a minute apart, oldest first ("Comment 1" … "Comment n"), written straight to
    the table: a long discussion without n trips through the service."""
    start = utcnow() - timedelta(days=2)
    rows = [Comment(public_id=f"{prefix[:1].lower()}{item.id}x{i + 1}", item_id=item.id, author_id=author.id,
                    body=f"{prefix} {i + 1}", created_at=start + timedelta(minutes=i)) for i in range(n)]
    session.add_all(rows)
    session.flush()
    return rows


def section(html: str) -> str:
    """The discussion section of an item page."""
    start = html.index('<section class="discussion"')
    return html[start:html.index("</section>", start)]


async def post_comment(client, item, body: str, parent: str = ""):  # type: ignore[no-untyped-def]
    data = {"body": body, **({"parent": parent} if parent else {})}
    return await post_form(client, f"/items/{item.public_id}/comments", data, page=item.path)


STAFF_FORM = re.compile(r'<form method="post" action="(/admin/moderation/(\w+)/(\w+))"[^>]*>(.*?)</form>', re.DOTALL)
HIDDEN_FIELD = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


async def press_staff_button(client, page: str, comment: Comment, action: str):  # type: ignore[no-untyped-def]
    """Press a staff button (pin, unpin, hide, restore) under a comment on the item page the way a browser
    does: load the page, post its form to the form's own address with the form's hidden fields."""
    html = (await client.get(page)).text
    forms = [m for m in STAFF_FORM.finditer(html) if m.group(2) == comment.public_id and m.group(3) == action]
    assert forms, f"no {action} button under comment {comment.public_id} on {page}"
    return await client.post(forms[0].group(1), data=dict(HIDDEN_FIELD.findall(forms[0].group(4))))
