"""The audit log speaks words: every action the code records has a verb, never its internal name."""

from __future__ import annotations

import ast
import html
import re
from datetime import timedelta
from pathlib import Path

import pytest

from app.accounts.viewer import Viewer
from app.admin.audit import AUDIT_PER_PAGE
from app.audit.labels import AUDIT_VERBS
from app.audit.models import AuditEvent
from app.db import utcnow
from app.discussion import service as discussion
from app.feedback import service as feedback
from app.voting import merge as merging
from tests.factories import make_admin, make_item, make_user
from tests.feedback.helpers import make_idea
from tests.helpers.http import sign_in

APP = Path(__file__).resolve().parents[2] / "app"
ACTION_NAME = re.compile(r"[a-z_]+\.[a-z_]+")


def recorded_actions() -> tuple[set[str], list[str]]:
    """Every action name passed as `action=` in app/, and the places where it is not a plain name.

    audit.record(action=...) takes a literal (or `a if x else b`), or a parameter of the enclosing
    function that its callers fill with literals (feedback._set_state); anything built at run time
    would escape this check, so it is reported instead.
    """
    actions: set[str] = set()
    problems: list[str] = []
    for path in sorted(APP.rglob("*.py")):
        tree = ast.parse(path.read_text(), filename=str(path))
        for func in [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]:
            params = {a.arg for a in func.args.args + func.args.kwonlyargs}
            for call in [n for n in ast.walk(func) if isinstance(n, ast.Call)]:
                is_record = isinstance(call.func, ast.Attribute) and call.func.attr == "record"
                for kw in call.keywords:
                    if kw.arg != "action":
                        continue
                    where = f"{path.relative_to(APP.parent)}:{call.lineno}"
                    if isinstance(kw.value, ast.Name) and kw.value.id in params:
                        continue  # passed through; the callers' literals are collected where they are
                    parts = list(ast.walk(kw.value))
                    names = [n.value for n in parts if isinstance(n, ast.Constant) and isinstance(n.value, str)]
                    dotted = [n for n in names if ACTION_NAME.fullmatch(n)]
                    built = not all(isinstance(n, (ast.Constant, ast.IfExp, ast.Name, ast.Load)) for n in parts)
                    if is_record and (built or not names or len(dotted) != len(names)):
                        problems.append(where)
                    actions.update(dotted)
    return actions, problems


def test_every_action_the_code_records_has_a_verb():
    actions, problems = recorded_actions()
    assert problems == [], "audit actions must be literal names like 'item.created'"
    # The collector sees the indirect ones too (not an empty set that passes by accident).
    assert {"feedback.declined", "comment.hidden", "item.unpublished", "invitation.cancelled"} <= actions
    missing = sorted(actions - AUDIT_VERBS.keys())
    assert missing == [], f"add a verb to AUDIT_VERBS in app/audit/labels.py for {missing}"


def _action_cells(page: str) -> list[str]:
    cells = re.findall(r"<tr>\s*<td>.*?</td>\s*<td>.*?</td>\s*<td>(.*?)</td>", page, re.DOTALL)
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", c)).split()) for c in cells]


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com")
    sign_in(client, session, user)
    return user


async def test_the_log_shows_a_verb_for_every_recorded_action_and_no_internal_name(client, session, admin):
    actions = sorted(recorded_actions()[0])
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
