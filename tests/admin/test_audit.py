"""The audit log speaks words: every action the code records is an AuditAction with a verb, never its internal
name."""

from __future__ import annotations

import ast
import html
import re
from datetime import timedelta
from pathlib import Path

import pytest

from app.accounts.viewer import Viewer
from app.admin.audit import AUDIT_PER_PAGE
from app.audit.actions import AuditAction
from app.audit.labels import AUDIT_VALUES, AUDIT_VERBS
from app.audit.models import AuditEvent
from app.db import utcnow
from app.discussion import service as discussion
from app.feedback import service as feedback
from app.roadmap import merge as merging
from tests.factories import make_admin, make_item, make_user
from tests.feedback.helpers import make_idea
from tests.helpers.http import sign_in

APP = Path(__file__).resolve().parents[2] / "app"


def bare_actions(source: str, filename: str = "<source>") -> list[str]:
    """The places in `source` where an `action=` argument (audit.record's, or a helper's that passes it on)
    is not an AuditAction: a string, or anything built at run time, would be a name the log has no words for.

    Allowed: `AuditAction.x`, `AuditAction.x if ... else AuditAction.y`, and a parameter of the enclosing
    function passed through (its callers are checked where they are)."""
    def member(node: ast.expr) -> bool:
        return (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id == "AuditAction")

    problems: list[str] = []
    tree = ast.parse(source, filename=filename)
    for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
        params = {a.arg for a in func.args.args + func.args.kwonlyargs}
        for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
            if isinstance(call.func, ast.Name) and call.func.id == "AuditEvent":
                continue  # the row itself, built by record() from the member it was given
            for kw in call.keywords:
                if kw.arg != "action":
                    continue
                value = kw.value
                ok = (member(value) or (isinstance(value, ast.IfExp) and member(value.body) and member(value.orelse))
                      or (isinstance(value, ast.Name) and value.id in params))
                if not ok:
                    problems.append(f"{filename}:{call.lineno}")
    return problems


def test_every_audit_action_has_a_verb():
    missing = sorted(a.value for a in AuditAction if a not in AUDIT_VERBS)
    assert missing == [], f"add a verb to AUDIT_VERBS in app/audit/labels.py for {missing}"
    assert all(isinstance(key, AuditAction) for key in AUDIT_VERBS), "AUDIT_VERBS is keyed by AuditAction"


def test_no_record_call_passes_a_bare_string():
    problems = [p for path in sorted(APP.rglob("*.py"))
                for p in bare_actions(path.read_text(), str(path.relative_to(APP.parent)))]
    assert problems == [], "audit.record(action=...) takes an AuditAction member"
    # The check is not blind.
    tangled = """
def f(session, actor, published, name):
    audit.record(session, actor=actor, action="item.created")
    audit.record(session, actor=actor, action=AuditAction.item_created)
    audit.record(session, actor=actor, action=AuditAction.item_published if published else "item.unpublished")
    audit.record(session, actor=actor, action=f"item.{name}")
    audit.record(session, actor=actor, action=AuditAction(name))
"""
    assert bare_actions(tangled) == ["<source>:3", "<source>:5", "<source>:6", "<source>:7"]


def test_stored_values_are_the_names_old_rows_hold():
    """Rows written before the enum hold these strings; they must still find their verbs."""
    assert AuditAction("item.merged_in") is AuditAction.item_merged_in
    assert AUDIT_VERBS["comment.hidden"] == "Hidden"  # a plain string from the column looks up the same
    assert len({a.value for a in AuditAction}) == len(AuditAction)


def _action_cells(page: str) -> list[str]:
    cells = re.findall(r"<tr>\s*<td>.*?</td>\s*<td>.*?</td>\s*<td>(.*?)</td>", page, re.DOTALL)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells]


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com")
    sign_in(client, session, user)
    return user


async def test_the_log_shows_a_verb_for_every_recorded_action_and_no_internal_name(client, session, admin):
    actions = sorted(a.value for a in AuditAction)
    start = utcnow() - timedelta(days=1)
    for n, action in enumerate(actions):
        entity_type = action.split(".")[0].removesuffix("s")
        session.add(AuditEvent(actor_id=admin.id, actor_label=admin.email, action=action, entity_type=entity_type,
                               entity_id=str(n), entity_label=f"Record {n}", changes={},
                               created_at=start + timedelta(minutes=n)))
    session.flush()

    shown: list[str] = []
    text = ""
    for page in range(1, len(actions) // AUDIT_PER_PAGE + 2):
        response = await client.get(f"/admin/audit?page={page}")
        assert response.status_code == 200
        shown += _action_cells(response.text)
        text += response.text
    assert shown == [AUDIT_VERBS[a] for a in reversed(actions)]  # newest first
    for action in actions:
        assert action not in text


async def test_moderation_feedback_and_merges_read_as_words(client, session, admin):
    customer = make_user(session, email="cara@example.com")
    item = make_item(session, title="Shift swaps")
    duplicate = make_item(session, title="Swap shifts with a colleague")
    remark = discussion.create_comment(session, viewer=Viewer(user=customer), item=item, body="Please hurry")
    discussion.hide_comment(session, actor=admin, comment=remark)
    idea = make_idea(session, customer, title="Dark mode")
    feedback.decline(session, feedback=idea, reason="Not this year.", actor=admin)
    merging.merge_items(session, source=duplicate, target=item, actor=admin)
    session.flush()

    cells = _action_cells((await client.get("/admin/audit")).text)
    for verb in ("Hidden", "Declined", "Merged into another item", "Took in a merged item"):
        assert verb in cells
    for raw in ("hidden", "declined", "merged_in", "comment.", "feedback."):
        assert raw not in cells
    only_comments = (await client.get("/admin/audit?type=comment")).text
    assert ">Comments</option>" in only_comments and _action_cells(only_comments) == ["Hidden"]

    # The item's own recent changes use the same words.
    edit = (await client.get(f"/admin/items/{item.public_id}")).text
    assert "<strong>Took in a merged item</strong>" in edit and "merged in" not in edit


async def test_a_captured_vote_names_its_source_by_the_forms_label_and_skips_empty_fields(client, session, admin):
    customer = make_user(session, email="cara@example.com")
    item = make_item(session, title="Shift swaps")
    data = feedback.parse_capture_form(session, {"customer": str(customer.id), "importance": "2", "source": "ticket"})
    feedback.capture_vote(session, item=item, data=data, actor=admin)  # no link given
    session.flush()

    for page in ("/admin/audit", f"/admin/items/{item.public_id}"):
        text = " ".join(html.unescape(re.sub(r"<[^>]+>", " ", (await client.get(page)).text)).split())
        assert "Vote captured for a customer" in text
        assert "Source: Support ticket" in text and "“ticket”" not in text
        assert "Source url" not in text and "Source link" not in text  # empty before and after: not listed


def test_captured_vote_sources_read_as_the_capture_forms_labels():
    assert AUDIT_VALUES["source"] == {source.value: name for source, name in feedback.SOURCE_NAMES.items()}
