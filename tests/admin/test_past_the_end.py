"""A staff list asked for a page past its last says so and leads to the last, instead of calling itself empty (the
walk-through: the audit log at ?page=999 said "Nothing recorded yet" with four pages of changes)."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest

from app.audit import service as audit
from app.audit.actions import AuditAction
from app.changelog.models import ChangelogEntry
from app.db import utcnow
from tests.factories import make_admin, make_item
from tests.feedback.helpers import make_customer, make_idea
from tests.helpers.http import sign_in


def _a_change(session: Any, admin: Any) -> None:
    audit.record(session, actor=admin, action=AuditAction.item_created, entity=make_item(session, title="Audited"))
    session.flush()


def _an_entry(session: Any, admin: Any) -> None:
    session.add(ChangelogEntry(public_id="entry1a", slug="spring", title="Spring", notes="Notes.",
                               published_at=utcnow()))
    session.flush()


def _an_idea(session: Any, admin: Any) -> None:
    make_idea(session, make_customer(session))


def _a_customer(session: Any, admin: Any) -> None:
    make_customer(session)


@pytest.mark.parametrize(("path", "empty", "make", "noun"), [
    ("/admin/audit", "Nothing recorded yet", _a_change, "change"),
    ("/admin/changelog", "No entries yet", _an_entry, "entry"),
    ("/admin/feedback", "The inbox is empty", _an_idea, "entry"),
    ("/admin/people", "No customers yet", _a_customer, "customer"),
])
async def test_a_page_past_the_last_says_so_and_leads_to_the_last(client, session, path: str, empty: str,
                                                                   make: Callable[[Any, Any], None], noun: str):
    admin = make_admin(session, email="ada@example.com")
    sign_in(client, session, admin)
    make(session, admin)

    past = await client.get(f"{path}?page=999")

    text = " ".join(re.sub(r"<[^>]+>", " ", past.text).split())
    assert past.status_code == 200 and empty not in text
    assert f"Nothing on page 999 There is 1 {noun} on 1 page. Go to the last page (page 1)" in text
    assert f'<a href="{path}">Go to the last page (page 1)</a>' in past.text
