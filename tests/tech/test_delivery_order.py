"""Out-of-order news: a generic delivery's link without `updated_at` counts as of the delivery's signed time, so
it does not override newer dated news; a Jira delivery without its `timestamp` is refused (Jira always sends it,
and without it a replay could not be told)."""

from __future__ import annotations

import json
import time
from datetime import timedelta

import pytest

from app.db import utcnow
from app.tech import trackers
from app.tech.models import HookKind, TrackerDelivery
from tests.factories import make_item, make_pm
from tests.helpers.trackers import github_headers, jira_body, link, make_hook, payload


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


async def _send(client, hook, secret, links, *, at, id=None):  # type: ignore[no-untyped-def]
    body = json.dumps({"links": links} | ({"id": id} if id else {})).encode()
    headers = {"content-type": "application/json", trackers.GENERIC_HEADER: trackers.sign_generic(secret, body, at)}
    return await client.post(f"/hooks/generic/{hook.public_id}", content=body, headers=headers)


async def test_an_undated_generic_update_does_not_override_newer_dated_news(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.generic, settings, tracker="jira")
    row = link(session, make_item(session), "jira", "PAY-142")
    session.commit()
    now = int(time.time())
    dated = await _send(client, hook, secret, [{"kind": "jira", "key": "PAY-142", "done": True, "status": "Done",
                                                "updated_at": utcnow().isoformat()}], at=now)
    assert dated.json()["outcome"] == "matched"
    # Sent a minute earlier (a retry that arrived late), without a time of its own: older, kept.
    late = await _send(client, hook, secret, [{"kind": "jira", "key": "PAY-142", "done": False, "status": "Open"}],
                       at=now - 60)
    assert late.status_code == 200 and late.json()["outcome"] == "ignored"
    assert "Older than what is known, kept: PAY-142." in late.json()["detail"]
    session.refresh(row)
    assert row.done and row.status == "Done"
    # Sent after the dated news: it applies.
    row.tracker_updated_at = utcnow() - timedelta(minutes=5)
    session.commit()
    newer = await _send(client, hook, secret, [{"kind": "jira", "key": "PAY-142", "done": False, "status": "Reopened"}],
                        at=now)
    assert newer.json()["outcome"] == "matched"
    session.refresh(row)
    assert not row.done and row.status == "Reopened"


async def test_a_jira_delivery_without_its_timestamp_is_refused(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.jira, settings)
    row = link(session, make_item(session), "jira", "PAY-142")
    session.commit()
    for stamp in (None, "1733212800000", True):
        data = json.loads(jira_body())
        if stamp is None:
            del data["timestamp"]
        else:
            data["timestamp"] = stamp
        answer = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=json.dumps(data).encode(),
                                   headers={"content-type": "application/json"})
        assert answer.status_code == 400 and "No `timestamp`" in answer.json()["detail"], answer.text
    session.refresh(row)
    assert not row.done and session.query(TrackerDelivery).count() == 0
    ok = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=jira_body(),
                           headers={"content-type": "application/json"})
    assert ok.status_code == 200


# --- undated news, the same rule for every format -------------------------------------------------------


def _undated(name: str) -> bytes:
    data = json.loads(payload(name))
    data.get("issue", data.get("object_attributes", {})).pop("updated_at", None)
    return json.dumps(data).encode()


async def test_an_undated_github_reopened_after_a_dated_closed_is_kept_out(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#88")
    closed, reopened = payload("github_issue_closed.json"), _undated("github_issue_reopened.json")
    await client.post(f"/hooks/github/{hook.public_id}", content=closed, headers=github_headers(secret, closed))
    late = await client.post(f"/hooks/github/{hook.public_id}", content=reopened,
                             headers=github_headers(secret, reopened, delivery="d-2"))
    assert late.status_code == 200 and late.json()["outcome"] == "ignored"
    assert "Undated (no updated-at) while dated news is known, kept: acme/app#88." in late.json()["detail"]
    session.refresh(row)
    assert row.done and row.status == "closed"


async def test_undated_news_applies_to_a_link_without_dated_news(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.gitlab, settings)
    row = link(session, make_item(session), "gitlab", "acme/platform#12")
    body = _undated("gitlab_issue_closed.json")
    answer = await client.post(f"/hooks/gitlab/{hook.public_id}", content=body, headers={
        "content-type": "application/json", "x-gitlab-token": secret})
    assert answer.json()["outcome"] == "matched", answer.text
    session.refresh(row)
    assert row.done and row.tracker_updated_at is None
    dated = payload("gitlab_issue_closed.json")  # dated news after undated news applies
    again = await client.post(f"/hooks/gitlab/{hook.public_id}", content=dated, headers={
        "content-type": "application/json", "x-gitlab-token": secret})
    assert again.status_code == 200
    session.refresh(row)
    assert row.tracker_updated_at is not None


async def test_a_jira_issue_without_updated_counts_as_of_the_deliverys_timestamp(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.jira, settings)
    row = link(session, make_item(session), "jira", "PAY-142", tracker_updated_at=utcnow() + timedelta(minutes=5))
    data = json.loads(jira_body())
    del data["issue"]["fields"]["updated"]
    answer = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=json.dumps(data).encode(),
                               headers={"content-type": "application/json"})
    assert answer.json()["outcome"] == "ignored" and "Older than what is known" in answer.json()["detail"]
    session.refresh(row)
    assert not row.done
    row.tracker_updated_at = utcnow() - timedelta(minutes=5)
    session.flush()
    data["timestamp"] += 1  # another delivery
    answer = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=json.dumps(data).encode(),
                               headers={"content-type": "application/json"})
    assert answer.json()["outcome"] == "matched"


# --- the generic format's booleans, and a repeat with nothing new ---------------------------------------


@pytest.mark.parametrize(("entry", "field"), [
    ({"done": False, "started": "false"}, "`started`"), ({"done": "false"}, "`done`"), ({"done": 1}, "`done`"),
    ({"done": False, "started": None}, "`started`"), ({"done": False, "status": 3}, "`status`"),
])
async def test_the_generic_format_refuses_a_non_boolean_naming_the_field(client, session, pm, settings, entry, field):
    hook, secret = make_hook(session, pm, HookKind.generic, settings, tracker="linear")
    row = link(session, make_item(session), "linear", "ENG-12")
    answer = await _send(client, hook, secret, [{"kind": "linear", "key": "ENG-12", **entry}], at=int(time.time()))
    assert answer.status_code == 400 and field in answer.json()["detail"], answer.text
    session.refresh(row)
    assert not row.started and not row.done


async def test_a_repeat_with_nothing_new_says_so(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.generic, settings, tracker="linear")
    row = link(session, make_item(session), "linear", "ENG-12")
    news = [{"kind": "linear", "key": "ENG-12", "status": "In Progress", "done": False, "started": True}]
    now = int(time.time())
    first = await _send(client, hook, secret, news, at=now - 5, id="run-1")
    assert first.json() == {"outcome": "matched", "detail": "Updated ENG-12."}
    again = await _send(client, hook, secret, news, at=now, id="run-2")  # the same news, another delivery
    assert again.json() == {"outcome": "ignored",
                            "detail": "Nothing new for ENG-12: status and done as known."}
    session.refresh(row)
    assert row.started and row.status == "In Progress"
    assert [d.outcome.value for d in session.query(TrackerDelivery).order_by(TrackerDelivery.id)] == [
        "matched", "ignored"]
