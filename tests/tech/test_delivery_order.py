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
from tests.helpers.trackers import jira_body, link, make_hook


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


async def _send(client, hook, secret, links, *, at):  # type: ignore[no-untyped-def]
    body = json.dumps({"links": links}).encode()
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
