"""Issue addresses as PMs paste them, read into a tracker and a key; and the payload readers' edge cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.tech import trackers
from app.tech.models import TrackerKind


@pytest.mark.parametrize(("url", "kind", "key"), [
    ("https://github.com/acme/app/issues/88", TrackerKind.github, "acme/app#88"),
    ("https://github.com/acme/app/pull/91/", TrackerKind.github, "acme/app#91"),
    ("https://gitlab.com/acme/platform/-/issues/12", TrackerKind.gitlab, "acme/platform#12"),
    ("https://gitlab.com/acme/sub/platform/-/merge_requests/7", TrackerKind.gitlab, "acme/sub/platform!7"),
    ("https://git.acme.example/team/app/-/issues/3", TrackerKind.gitlab, "team/app#3"),
    ("https://acme.atlassian.net/browse/PAY-142", TrackerKind.jira, "PAY-142"),
    ("https://acme.atlassian.net/jira/software/projects/PAY/boards/1?selectedIssue=PAY-7", TrackerKind.jira, "PAY-7"),
    ("https://jira.acme.example/browse/OPS-9", TrackerKind.jira, "OPS-9"),
    ("https://linear.app/acme/issue/ENG-123/stream-exports", TrackerKind.linear, "ENG-123"),
    ("  https://linear.app/acme/issue/ENG-5  ", TrackerKind.linear, "ENG-5"),
])
def test_recognised_addresses(url, kind, key):
    ref = trackers.recognise(url)
    assert (ref.kind, ref.key) == (kind, key)


@pytest.mark.parametrize("url", [
    "", "github.com/acme/app/issues/88", "ftp://github.com/acme/app/issues/88",
    "https://github.com/acme/app", "https://github.com/acme/app/issues/x",
    "https://example.com/some/page", "javascript:alert(1)", "https://acme.atlassian.net/browse/pay-142",
])
def test_other_addresses_are_refused_with_what_is_accepted(url):
    with pytest.raises(trackers.NotAnIssueUrl, match="GitHub or GitLab"):
        trackers.recognise(url)


def test_times_as_each_tracker_writes_them():
    assert trackers.parse_time("2026-12-03T08:00:00Z").isoformat() == "2026-12-03T08:00:00+00:00"
    assert trackers.parse_time("2026-12-03 08:10:00 UTC").isoformat() == "2026-12-03T08:10:00+00:00"
    assert trackers.parse_time("2026-12-03T19:05:00.000+1100").isoformat() == "2026-12-03T08:05:00+00:00"
    assert trackers.parse_time("yesterday") is None and trackers.parse_time(5) is None


def test_an_issue_closed_as_not_planned_is_not_done():
    parsed = trackers.parse_github("issues", {
        "action": "closed", "repository": {"full_name": "acme/app"},
        "issue": {"number": 1, "state": "closed", "state_reason": "not_planned", "assignees": []}})
    assert parsed.updates[0].done is False and parsed.updates[0].status == "closed (not planned)"


def test_a_merged_pull_request_is_done():
    parsed = trackers.parse_github("pull_request", {
        "action": "closed", "repository": {"full_name": "acme/app"},
        "pull_request": {"number": 91, "state": "closed", "merged": True}})
    assert parsed.updates[0].done and parsed.updates[0].status == "merged"


def test_generic_body_rules():
    with pytest.raises(trackers.Rejected, match="links"):
        trackers.parse_generic({"links": []})
    with pytest.raises(trackers.Rejected, match="kind"):
        trackers.parse_generic({"links": [{"kind": "trello", "key": "x", "done": True}]})
    with pytest.raises(trackers.Rejected, match="updated_at"):
        trackers.parse_generic({"links": [{"kind": "jira", "key": "PAY-1", "done": True, "updated_at": "soon"}]})


@pytest.mark.parametrize(("reason", "done", "status"), [
    ("completed", True, "closed"), ("duplicate", False, "closed (duplicate)"),
    ("not_planned", False, "closed (not planned)"), (None, True, "closed"),
])
def test_a_closed_issue_is_done_only_when_completed(reason, done, status):
    data = json.loads((Path(__file__).parent / "payloads" / "github_issue_closed.json").read_text())
    data["issue"]["state_reason"] = reason  # as GitHub's issues webhook documents it: completed, not_planned, duplicate
    parsed = trackers.parse_github("issues", data)
    assert (parsed.updates[0].done, parsed.updates[0].status) == (done, status)
    assert parsed.updates[0].started  # assigned
