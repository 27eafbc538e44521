"""Tracker webhooks through HTTP, with payloads shaped as GitHub, GitLab and Jira Cloud document them (written
by hand in tests/tech/payloads/): valid, wrong and missing signatures, duplicates, out-of-order deliveries,
stage mappings, and the narrow CSRF exemption."""

from __future__ import annotations

import dataclasses
import json
import time

import pytest
from fastapi.routing import APIRoute, iter_route_contexts

from app.audit.models import AuditEvent
from app.outbox.models import OutboxJob
from app.portal import service as portal
from app.roadmap.models import StageChange
from app.security import verify_csrf
from app.tech import trackers
from app.tech.models import REFUSALS_KEPT, HookKind, ItemDelivery, TrackerDelivery, TrackerRefusal
from tests.factories import make_item, make_pm, stage
from tests.helpers.http import sign_in
from tests.helpers.trackers import github_headers, jira_body, link, make_hook, payload


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


# --- GitHub ---------------------------------------------------------------------------------------------


async def test_github_closed_issue_marks_the_link_done(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    item = make_item(session)
    row = link(session, item, "github", "acme/app#88")
    body = payload("github_issue_closed.json")
    response = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert response.status_code == 200 and response.json()["outcome"] == "matched"
    session.refresh(row)
    assert row.done and row.status == "closed"
    delivery = session.query(TrackerDelivery).one()
    assert delivery.event == "issues.closed" and "acme/app#88" in delivery.detail


@pytest.mark.parametrize("signature", [None, "sha256=" + "0" * 64, "sha1=abc", ""])
async def test_github_bad_or_missing_signature_is_401_and_changes_nothing(client, session, pm, settings, signature):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#88")
    body = payload("github_issue_closed.json")
    headers = github_headers(secret, body)
    if signature is None:
        del headers["x-hub-signature-256"]
    else:
        headers["x-hub-signature-256"] = signature
    response = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=headers)
    assert response.status_code == 401 and response.json()["error"] == "unauthorized"
    session.refresh(row)
    assert not row.done and session.query(TrackerDelivery).count() == 0


async def test_refused_deliveries_are_kept_the_last_twenty_with_time_and_reason(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#88")
    body = payload("github_issue_closed.json")
    headers = github_headers(secret, body) | {"x-hub-signature-256": "sha256=" + "0" * 64}
    for _ in range(REFUSALS_KEPT + 3):
        assert (await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=headers)).status_code == 401
    missing = {k: v for k, v in headers.items() if k != "x-hub-signature-256"}
    assert (await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=missing)).status_code == 401
    session.refresh(row)
    kept = session.query(TrackerRefusal).filter_by(hook_id=hook.id).order_by(TrackerRefusal.seq).all()
    assert len(kept) == REFUSALS_KEPT and kept[-1].seq == REFUSALS_KEPT + 4  # bounded, the newest kept
    assert kept[-1].reason == "No X-Hub-Signature-256 header." and kept[0].reason == "The signature does not match."
    assert not row.done and session.query(TrackerDelivery).count() == 0
    session.refresh(hook)
    assert hook.last_delivery_at is None
    sign_in(client, session, pm)
    page = (await client.get("/admin/tech/hooks")).text
    assert f"{REFUSALS_KEPT + 4}, the latest" in page and "No X-Hub-Signature-256 header." in page
    log = page.split('id="deliveries-title"', 1)[1]
    assert log.count(">Refused</span>") == REFUSALS_KEPT and log.count("The signature does not match.") == 19


async def test_a_body_changed_after_signing_is_refused(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    body = payload("github_issue_closed.json")
    headers = github_headers(secret, body)
    response = await client.post(f"/hooks/github/{hook.public_id}", content=body.replace(b"88", b"89"), headers=headers)
    assert response.status_code == 401


async def test_the_same_delivery_twice_changes_nothing_more(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#88")
    body = payload("github_issue_closed.json")
    first = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    session.refresh(row)
    assert row.done
    row.done = False  # what a second application would undo
    session.flush()
    again = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert first.json()["outcome"] == "matched" and again.json()["outcome"] == "ignored"
    assert "Received before" in again.json()["detail"]
    session.refresh(row)
    assert row.done is False


async def test_an_older_reopened_after_a_newer_closed_does_not_win(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#88")
    closed, reopened = payload("github_issue_closed.json"), payload("github_issue_reopened.json")
    await client.post(f"/hooks/github/{hook.public_id}", content=closed,
                      headers=github_headers(secret, closed, delivery="new"))
    late = await client.post(f"/hooks/github/{hook.public_id}", content=reopened,
                             headers=github_headers(secret, reopened, delivery="old"))
    assert late.status_code == 200 and late.json()["outcome"] == "ignored"
    assert "Older than what is known" in late.json()["detail"]
    session.refresh(row)
    assert row.done and row.status == "closed"


async def test_a_pull_request_opened_starts_the_link_and_ping_is_ignored(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    row = link(session, make_item(session), "github", "acme/app#91")
    body = payload("github_pull_request_opened.json")
    await client.post(f"/hooks/github/{hook.public_id}", content=body,
                      headers=github_headers(secret, body, event="pull_request"))
    session.refresh(row)
    assert row.started and not row.done and row.status == "open"
    ping = b'{"zen": "Keep it logically awesome.", "hook_id": 1}'
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=ping,
                               headers=github_headers(secret, ping, event="ping", delivery="p"))
    assert answer.status_code == 200 and answer.json()["outcome"] == "ignored"


async def test_unknown_hook_and_wrong_content_type(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    body = payload("github_issue_closed.json")
    assert (await client.post("/hooks/github/nosuchhook", content=body,
                              headers=github_headers(secret, body))).status_code == 404
    # A GitLab hook's id on the GitHub address names nothing either.
    headers = {**github_headers(secret, body), "content-type": "application/x-www-form-urlencoded"}
    assert (await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=headers)).status_code == 415


async def test_a_body_over_the_cap_is_refused_unread(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    body = b'{"pad": "' + b"x" * (settings.max_body_bytes + 10) + b'"}'
    response = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert response.status_code == 413 and response.json()["error"] == "too_large"


# --- GitLab ---------------------------------------------------------------------------------------------


async def test_gitlab_token(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.gitlab, settings)
    row = link(session, make_item(session), "gitlab", "acme/platform#12")
    body = payload("gitlab_issue_closed.json")
    headers = {"content-type": "application/json", "x-gitlab-event": "Issue Hook"}
    for token in (None, "wrong"):
        sent = headers if token is None else {**headers, "x-gitlab-token": token}
        assert (await client.post(f"/hooks/gitlab/{hook.public_id}", content=body, headers=sent)).status_code == 401
    ok = await client.post(f"/hooks/gitlab/{hook.public_id}", content=body,
                           headers={**headers, "x-gitlab-token": secret, "idempotency-key": "k1"})
    assert ok.status_code == 200 and ok.json()["outcome"] == "matched"
    session.refresh(row)
    assert row.done and row.tracker_updated_at.isoformat().startswith("2026-12-03T08:10")


# --- Jira -----------------------------------------------------------------------------------------------


async def test_jira_secret_in_the_address_and_its_age(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.jira, settings)
    row = link(session, make_item(session), "jira", "PAY-142")
    headers = {"content-type": "application/json"}
    assert (await client.post(f"/hooks/jira/{hook.public_id}/wrong", content=jira_body(),
                              headers=headers)).status_code == 401
    stale = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=jira_body(age_seconds=7200),
                              headers=headers)
    assert stale.status_code == 400 and "older than" in stale.json()["detail"]
    session.refresh(row)
    assert not row.done
    ok = await client.post(f"/hooks/jira/{hook.public_id}/{secret}", content=jira_body(), headers=headers)
    assert ok.status_code == 200, ok.text
    session.refresh(row)
    assert row.done and row.status == "Done"


# --- generic --------------------------------------------------------------------------------------------


async def test_generic_format(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.generic, settings, tracker="linear")
    row = link(session, make_item(session), "linear", "ENG-12")
    body = json.dumps({"id": "run-1", "links": [{"kind": "linear", "key": "ENG-12", "status": "In Progress",
                                                  "done": False, "started": True}]}).encode()
    now = int(time.time())
    good = {"content-type": "application/json", trackers.GENERIC_HEADER: trackers.sign_generic(secret, body, now)}
    old = {"content-type": "application/json", trackers.GENERIC_HEADER: trackers.sign_generic(secret, body, now - 3600)}
    bad = {"content-type": "application/json", trackers.GENERIC_HEADER: trackers.sign_generic("nope", body, now)}
    assert (await client.post(f"/hooks/generic/{hook.public_id}", content=body, headers=bad)).status_code == 401
    assert (await client.post(f"/hooks/generic/{hook.public_id}", content=body, headers=old)).status_code == 400
    ok = await client.post(f"/hooks/generic/{hook.public_id}", content=body, headers=good)
    assert ok.status_code == 200 and ok.json()["outcome"] == "matched"
    session.refresh(row)
    assert row.started and row.status == "In Progress"
    spec = (await client.get("/openapi.json")).json()
    assert "X-Ahead-Signature" in json.dumps(spec["paths"]["/hooks/generic/{hook_id}"])


# --- mappings -------------------------------------------------------------------------------------------


async def test_mapping_moves_the_item_as_the_integration(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    item = make_item(session, stage_slug="planned", title="Exports to S3")
    link(session, item, "github", "acme/app#88")
    session.add(ItemDelivery(item_id=item.id, show_progress=True, started_stage_id=None,
                             done_stage_id=stage(session, "released").id))
    session.flush()
    body = payload("github_issue_closed.json")
    response = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert "Moved “Exports to S3” from Planned to Released." in response.json()["detail"]
    session.refresh(item)
    assert item.stage_id == stage(session, "released").id and item.released_at is not None
    move = session.query(AuditEvent).filter_by(action="item.moved").one()
    assert move.actor_label == "integration: github hook (github)" and move.actor_id is None
    assert session.query(StageChange).filter_by(item_id=item.id, to_stage_id=item.stage_id).one().changed_by_id is None
    # Its followers hear of it as of a PM's move: one fan-out job, a release, nobody left out as its actor.
    job = session.query(OutboxJob).filter_by(kind="notify.fan_out").one()
    assert (job.payload["kind"], job.payload["item_id"], job.payload["actor_id"]) == ("released", item.id, None)


# --- the CSRF exemption is the hooks' alone --------------------------------------------------------------


def _depends_on(dependant, target) -> bool:  # type: ignore[no-untyped-def]
    stack = [dependant]
    while stack:
        current = stack.pop()
        if current.call is target:
            return True
        stack.extend(current.dependencies)
    return False


def test_only_the_tracker_hooks_skip_the_csrf_check(app):
    unchecked = sorted(
        context.path for context in iter_route_contexts(app.routes)
        if isinstance(context.original_route, APIRoute)
        and (context.methods or set()) & {"POST", "PUT", "PATCH", "DELETE"}
        and not (_depends_on(context.dependant, verify_csrf)
                 or _depends_on(context.original_route.dependant, verify_csrf))
    )
    hooks = [path for path in unchecked if path.startswith("/hooks/")]
    assert hooks == ["/hooks/generic/{hook_id}", "/hooks/github/{hook_id}", "/hooks/gitlab/{hook_id}",
                     "/hooks/jira/{hook_id}/{secret}"]
    # The others are authenticated another way, each by its own area: the API (staff tokens, and the answer
    # for a vote address's other methods) and the emails' one-click links (a signed token in the address).
    # No page of the portal or the staff area is among them.
    others = [path for path in unchecked if not path.startswith("/hooks/")]
    assert all(path.startswith(("/api/", "/unsubscribe/", "/email-preferences/")) for path in others), others


async def test_the_hooks_answer_in_private_mode_and_nothing_else_opens(client, session, pm, settings):

    access = portal.get_access_uncached(session)
    portal.update_access(session, actor=pm, access=dataclasses.replace(access, private_mode=True))
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    body = payload("github_issue_closed.json")
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert answer.status_code == 200
    assert (await client.get("/", follow_redirects=False)).status_code in (302, 303)
