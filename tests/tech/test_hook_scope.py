"""A webhook updates only its own tracker's links (and, when limited, only those of its repositories, groups or
project keys): a delivery naming anything else changes nothing and is recorded as ignored, with the reason."""

from __future__ import annotations

import json
import time

import pytest

from app.tech import trackers
from app.tech.models import HookKind, TrackerDelivery, TrackerHook
from tests.factories import make_item, make_pm
from tests.helpers.http import post_form, sign_in
from tests.helpers.trackers import github_headers, link, make_hook, payload


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


async def _generic(client, hook, secret, links):  # type: ignore[no-untyped-def]
    body = json.dumps({"links": links}).encode()
    headers = {"content-type": "application/json",
               trackers.GENERIC_HEADER: trackers.sign_generic(secret, body, int(time.time()))}
    return await client.post(f"/hooks/generic/{hook.public_id}", content=body, headers=headers)


async def test_a_generic_hook_for_jira_leaves_a_github_link_alone(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.generic, settings, tracker="jira")
    item = make_item(session)
    github = link(session, item, "github", "acme/app#88")
    jira = link(session, item, "jira", "PAY-142")
    session.commit()
    only_other = await _generic(client, hook, secret, [{"kind": "github", "key": "acme/app#88", "done": True}])
    assert only_other.status_code == 200 and only_other.json()["outcome"] == "ignored"
    assert only_other.json()["detail"] == ("Not this webhook's to update (it updates Jira issues only): "
                                           "GitHub acme/app#88.")
    session.refresh(github)
    assert not github.done and github.status == "open"
    recorded = session.query(TrackerDelivery).one()
    assert recorded.outcome.value == "ignored" and "GitHub acme/app#88" in recorded.detail

    mixed = await _generic(client, hook, secret, [{"kind": "jira", "key": "PAY-142", "done": True},
                                                  {"kind": "github", "key": "acme/app#88", "done": True}])
    assert mixed.json()["outcome"] == "matched"
    assert "Updated PAY-142." in mixed.json()["detail"] and "GitHub acme/app#88" in mixed.json()["detail"]
    session.refresh(github)
    session.refresh(jira)
    assert jira.done and not github.done


async def test_a_github_hook_limited_to_a_repository_ignores_another_repository(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings, scope="acme/web")
    row = link(session, make_item(session), "github", "acme/app#88")  # the payload's repository is acme/app
    session.commit()
    body = payload("github_issue_closed.json")
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert answer.status_code == 200 and answer.json()["outcome"] == "ignored"
    assert answer.json()["detail"] == ("Not this webhook's to update (it updates GitHub acme/web only): "
                                       "GitHub acme/app#88.")
    session.refresh(row)
    assert not row.done

    owner_wide, owner_secret = make_hook(session, pm, HookKind.github, settings, scope="ACME", name="acme org")
    session.commit()
    ok = await client.post(f"/hooks/github/{owner_wide.public_id}", content=body,
                           headers=github_headers(owner_secret, body, delivery="d-2"))
    assert ok.json()["outcome"] == "matched"
    session.refresh(row)
    assert row.done


def test_scopes_match_paths_groups_and_project_keys():
    github, gitlab, jira = trackers.TrackerKind.github, trackers.TrackerKind.gitlab, trackers.TrackerKind.jira
    assert trackers.in_scope(github, "Acme/App#1", ["acme/app"]) and trackers.in_scope(github, "acme/x#1", ["acme"])
    assert not trackers.in_scope(github, "acme-evil/app#1", ["acme"])
    assert trackers.in_scope(gitlab, "grp/sub/proj!3", ["grp/sub"]) and not trackers.in_scope(gitlab, "grpx/p#1", ["grp"])
    assert trackers.in_scope(jira, "PAY-1", ["OPS", "PAY"]) and not trackers.in_scope(jira, "PAYX-1", ["PAY"])
    with pytest.raises(ValueError, match="is not a project key"):
        trackers.parse_scope(jira, "PAY acme/app")


async def test_the_admin_form_asks_a_generic_hook_for_its_tracker_and_checks_the_scope(client, session, pm):
    sign_in(client, session, pm)
    no_tracker = await post_form(client, "/admin/tech/hooks", {"name": "CI", "kind": "generic"},
                                 page="/admin/tech/hooks")
    assert no_tracker.status_code == 422 and "Choose the tracker whose issues it reports." in no_tracker.text
    bad_scope = await post_form(client, "/admin/tech/hooks", {"name": "CI", "kind": "jira", "scope": "acme/app"},
                                page="/admin/tech/hooks")
    assert bad_scope.status_code == 422 and "“acme/app” is not a project key (PAY)." in bad_scope.text
    made = await post_form(client, "/admin/tech/hooks", {"name": "CI", "kind": "generic", "tracker": "linear",
                                                          "scope": "ENG, OPS"}, page="/admin/tech/hooks")
    assert made.status_code == 200
    hook = session.query(TrackerHook).one()
    assert hook.tracker.value == "linear" and hook.scope == "ENG OPS"
    assert "Linear ENG, OPS only" in (await client.get("/admin/tech/hooks")).text
