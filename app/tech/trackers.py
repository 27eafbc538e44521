"""What Ahead understands of issue trackers, without talking to them: an issue's address (pasted by a PM)
and the webhook deliveries they send. Pure functions: no database, no network.

Nothing here fetches anything: a URL in a payload is at most stored as text.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from app.tech.models import HookKind, TrackerKind

KIND_LABELS = {TrackerKind.github: "GitHub", TrackerKind.gitlab: "GitLab", TrackerKind.jira: "Jira",
               TrackerKind.linear: "Linear"}
HOOK_LABELS = {HookKind.github: "GitHub", HookKind.gitlab: "GitLab", HookKind.jira: "Jira Cloud",
               HookKind.generic: "Generic JSON"}

# --- addresses ------------------------------------------------------------------------------------------

_SEGMENT = r"[A-Za-z0-9_.-]+"
_GITHUB = re.compile(rf"^/({_SEGMENT})/({_SEGMENT})/(issues|pull)/(\d{{1,9}})/?$")
_GITLAB = re.compile(rf"^/((?:{_SEGMENT}/)+{_SEGMENT})/-/(issues|merge_requests|work_items)/(\d{{1,9}})/?$")
JIRA_KEY = re.compile(r"^[A-Z][A-Z0-9_]{0,29}-\d{1,9}$")
_JIRA = re.compile(r"^(?:/[^/]+)*/browse/([A-Z][A-Z0-9_]{0,29}-\d{1,9})/?$")
_LINEAR = re.compile(r"^/[A-Za-z0-9_-]+/issue/([A-Z][A-Z0-9]{0,9}-\d{1,9})(?:/[^/]*)?/?$")


@dataclass(frozen=True, slots=True)
class IssueRef:
    kind: TrackerKind
    key: str
    url: str


class NotAnIssueUrl(ValueError):
    pass


UNRECOGNISED = ("Paste the address of a GitHub or GitLab issue or pull/merge request, a Jira issue "
                "(…/browse/PAY-142) or a Linear issue.")


def recognise(url: str) -> IssueRef:
    """The tracker and key of an issue's address: GitHub `owner/repo#88`, GitLab `group/project#12` (issues)
    or `group/project!7` (merge requests), Jira `PAY-142`, Linear `ENG-123`. Raises NotAnIssueUrl."""
    text = url.strip()
    try:
        parts = urlsplit(text)
    except ValueError as exc:
        raise NotAnIssueUrl(UNRECOGNISED) from exc
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("http", "https") or not host or len(text) > 2000:
        raise NotAnIssueUrl(UNRECOGNISED)
    path = parts.path
    if host == "github.com" and (m := _GITHUB.match(path)):
        return IssueRef(TrackerKind.github, f"{m[1]}/{m[2]}#{m[4]}", text)
    if host == "linear.app" and (m := _LINEAR.match(path)):
        return IssueRef(TrackerKind.linear, m[1], text)
    if m := _GITLAB.match(path):  # gitlab.com or a self-managed GitLab: the /-/ marks it
        sign = "!" if m[2] == "merge_requests" else "#"
        return IssueRef(TrackerKind.gitlab, f"{m[1]}{sign}{m[3]}", text)
    if m := _JIRA.match(path):  # Jira Cloud (*.atlassian.net) or Data Center
        return IssueRef(TrackerKind.jira, m[1], text)
    selected = parse_qs(parts.query).get("selectedIssue", [""])[0]
    if host.endswith(".atlassian.net") and JIRA_KEY.match(selected):  # a board with an issue open
        return IssueRef(TrackerKind.jira, selected, text)
    raise NotAnIssueUrl(UNRECOGNISED)


KEY_FORMATS = {
    TrackerKind.github: (re.compile(rf"^{_SEGMENT}/{_SEGMENT}#\d{{1,9}}$"), "owner/repo#88"),
    TrackerKind.gitlab: (re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})+[#!]\d{{1,9}}$"), "group/project#12 or group/project!7"),
    TrackerKind.jira: (JIRA_KEY, "PAY-142"),
    TrackerKind.linear: (re.compile(r"^[A-Z][A-Z0-9]{0,9}-\d{1,9}$"), "ENG-123"),
}


class BadLink(ValueError):
    """A link's key or address refused; `field` names which (`key` or `url`)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def same_key(kind: TrackerKind, a: str, b: str) -> bool:
    """GitHub owner/repo and GitLab group/project paths are case-insensitive; Jira and Linear keys are not."""
    if kind in (TrackerKind.github, TrackerKind.gitlab):
        return a.lower() == b.lower()
    return a == b


def check_link(kind: TrackerKind, key: str, url: str) -> None:
    """The one check every stored link passes (the form, the API, the CSV import): the key in its tracker's
    format, and the address, if any, an http(s) address of that very issue (as `recognise` reads it)."""
    pattern, example = KEY_FORMATS[kind]
    if not pattern.match(key):
        raise BadLink("key", f"“{key[:60]}” is not a {KIND_LABELS[kind]} key (like {example}).")
    if not url:
        return
    try:
        ref = recognise(url)
    except NotAnIssueUrl as exc:
        raise BadLink("url", str(exc)) from None
    if ref.kind != kind or not same_key(kind, ref.key, key):
        raise BadLink("url", f"The address is of {KIND_LABELS[ref.kind]} {ref.key}, not {KIND_LABELS[kind]} {key}.")


# --- what a webhook may update -----------------------------------------------------------------------

SCOPE_FORMATS = {
    TrackerKind.github: (re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})?$"), "a repository (acme/app) or an owner (acme)"),
    TrackerKind.gitlab: (re.compile(rf"^{_SEGMENT}(?:/{_SEGMENT})*$"), "a project (group/app) or a group (group)"),
    TrackerKind.jira: (re.compile(r"^[A-Z][A-Z0-9_]{0,29}$"), "a project key (PAY)"),
    TrackerKind.linear: (re.compile(r"^[A-Z][A-Z0-9]{0,9}$"), "a team key (ENG)"),
}


def parse_scope(kind: TrackerKind, value: str) -> list[str]:
    """A webhook's scope as typed (separated by spaces or commas), checked against its tracker's format;
    ValueError names the first entry refused. [] is the whole tracker."""
    entries = [part for part in re.split(r"[\s,]+", value.strip()) if part]
    pattern, example = SCOPE_FORMATS[kind]
    for entry in entries:
        if not pattern.match(entry):
            raise ValueError(f"“{entry[:60]}” is not {example}.")
    return entries


def in_scope(kind: TrackerKind, key: str, scope: list[str]) -> bool:
    """Whether a link's key lies in a webhook's scope: the repository or its owner (GitHub), the project or a
    group above it (GitLab), the project / team key (Jira, Linear). Paths compare in any letter case."""
    if not scope:
        return True
    if kind in (TrackerKind.github, TrackerKind.gitlab):
        path = re.split(r"[#!]", key, maxsplit=1)[0].lower()
        return any(path == entry.lower() or path.startswith(entry.lower() + "/") for entry in scope)
    return key.split("-", 1)[0] in scope


# --- signatures -----------------------------------------------------------------------------------------


def derive_secret(app_secret: str, salt: str) -> str:
    """A hook's secret: HMAC(SECRET_KEY, salt). Not stored; rotating SECRET_KEY changes every hook's secret."""
    return hmac.new(("tracker-hook:" + app_secret).encode(), salt.encode(), hashlib.sha256).hexdigest()


def _sign(secret: str, message: bytes) -> str:
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


class Rejected(Exception):
    """A delivery refused before its body is read: 401 (signature) or 400 (stale, unreadable)."""

    def __init__(self, reason: str, status: int = 401) -> None:
        super().__init__(reason)
        self.reason = reason
        self.status = status


def check_github(secret: str, body: bytes, header: str | None) -> None:
    """X-Hub-Signature-256: `sha256=` and the hex HMAC-SHA256 of the raw body."""
    if not header:
        raise Rejected("No X-Hub-Signature-256 header.")
    expected = "sha256=" + _sign(secret, body)
    if not hmac.compare_digest(expected.encode(), header.strip().encode("utf-8", "replace")):
        raise Rejected("The signature does not match.")


def check_token(secret: str, header: str | None, *, name: str) -> None:
    """GitLab's X-Gitlab-Token, or Jira's secret in the address: the secret itself, compared in constant time."""
    if not header:
        raise Rejected(f"No {name}.")
    if not hmac.compare_digest(secret.encode(), header.encode("utf-8", "replace")):
        raise Rejected(f"The {name} does not match.")


GENERIC_HEADER = "X-Ahead-Signature"


def sign_generic(secret: str, body: bytes, timestamp: int) -> str:
    """The generic format's header value: `t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>." + body>`."""
    return f"t={timestamp},v1={_sign(secret, str(timestamp).encode() + b'.' + body)}"


def check_generic(secret: str, body: bytes, header: str | None, *, now: datetime, tolerance: int) -> datetime:
    """The delivery's signed time (`t`), once the signature and its age are checked."""
    if not header:
        raise Rejected(f"No {GENERIC_HEADER} header.")
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    stamp, given = fields.get("t", "").strip(), fields.get("v1", "").strip()
    if not stamp.isascii() or not stamp.isdigit() or len(stamp) > 12 or not given:
        raise Rejected(f"{GENERIC_HEADER} must read t=<unix seconds>,v1=<hex signature>.")
    expected = _sign(secret, stamp.encode() + b"." + body)
    if not hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace")):
        raise Rejected("The signature does not match.")
    _check_age(int(stamp), now=now, tolerance=tolerance)
    return datetime.fromtimestamp(int(stamp), UTC)


def _check_age(stamp: int, *, now: datetime, tolerance: int) -> None:
    age = now.timestamp() - stamp
    if age > tolerance:
        raise Rejected(f"The delivery is {int(age)} s old; deliveries older than {tolerance} s are refused.", 400)
    if age < -tolerance:
        raise Rejected("The delivery is dated in the future.", 400)


def check_jira_age(payload: dict[str, Any], *, now: datetime, tolerance: int) -> None:
    """Jira's `timestamp` (milliseconds): a replay of an old delivery is refused, and so is a delivery without
    it (Jira always sends it; without it a replay could not be told)."""
    stamp = payload.get("timestamp")
    if not isinstance(stamp, int) or isinstance(stamp, bool):
        raise Rejected("No `timestamp` (milliseconds) in the delivery: Jira always sends one.", 400)
    _check_age(stamp // 1000, now=now, tolerance=tolerance)


# --- payloads -------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LinkUpdate:
    """What a delivery says of one tracker issue.

    `updated_at` dates the news: the issue's own updated-at, or else the delivery's time where the format carries
    one (the generic format's signed `t`, Jira's `timestamp`). GitHub and GitLab carry none, so news without the
    issue's updated-at is undated (None): it applies to a link that holds no dated news, never over dated news
    (service._apply), whichever tracker it comes from.
    """

    kind: TrackerKind
    key: str
    status: str
    started: bool
    done: bool
    updated_at: datetime | None
    title: str = ""


@dataclass(frozen=True, slots=True)
class Parsed:
    event: str
    updates: list[LinkUpdate]
    ignored: str = ""  # why nothing in it concerns links (an event Ahead does not use)


def parse_json(body: bytes) -> dict[str, Any]:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise Rejected("The body is not JSON.", 400) from exc
    if not isinstance(data, dict):
        raise Rejected("The body must be a JSON object.", 400)
    return data


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 as GitHub, Jira (`+1100`) and GitLab (`2019-04-06 21:20:45 UTC` too) write it; aware, UTC."""
    if not isinstance(value, str) or not value or len(value) > 40:
        return None
    text = value.strip()
    if text.endswith(" UTC"):
        text = text[:-4] + "+00:00"
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if re.search(r"[+-]\d{4}$", text):
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _text(value: Any, limit: int) -> str:
    return value[:limit] if isinstance(value, str) else ""


def parse_github(event: str, payload: dict[str, Any]) -> Parsed:
    """`issues` and `pull_request` events. An issue is done when closed as completed (not as "not planned" or
    "duplicate"),
    started once someone is assigned; a pull request is started while open and done when merged."""
    if event not in ("issues", "pull_request"):
        return Parsed(event, [], ignored=f"GitHub event “{event}” is not used.")
    repo = payload.get("repository") or {}
    thing = payload.get("issue" if event == "issues" else "pull_request") or {}
    full_name, number = repo.get("full_name"), thing.get("number")
    if not isinstance(full_name, str) or not isinstance(number, int):
        return Parsed(event, [], ignored="No repository and number in the payload.")
    state = thing.get("state")
    action = _text(payload.get("action"), 40)
    if event == "issues":
        # GitHub's state_reason: "completed" is done; "not_planned" and "duplicate" (and any reason added later)
        # are closed, not done. A GitHub Enterprise Server too old to send a reason closes as completed.
        reason = thing.get("state_reason")
        done = state == "closed" and reason in ("completed", None)
        status = "closed" if state == "closed" else "open"
        if state == "closed" and not done:
            status = f"closed ({_text(reason, 40).replace('_', ' ') or 'not done'})"
        started = done or bool(thing.get("assignees"))
    else:
        merged = bool(thing.get("merged")) or bool(thing.get("merged_at"))
        done = merged
        status = "merged" if merged else ("closed" if state == "closed" else ("draft" if thing.get("draft") else "open"))
        started = merged or state == "open"
    return Parsed(f"{event}.{action}" if action else event, [LinkUpdate(
        TrackerKind.github, f"{full_name}#{number}", status, started, done,
        parse_time(thing.get("updated_at")), _text(thing.get("title"), 300))])


def parse_gitlab(payload: dict[str, Any]) -> Parsed:
    """Issue and merge request events (`object_kind` issue / work_item / merge_request)."""
    kind = _text(payload.get("object_kind"), 40)
    if kind not in ("issue", "work_item", "merge_request"):
        return Parsed(kind, [], ignored=f"GitLab event “{kind}” is not used.")
    attributes = payload.get("object_attributes") or {}
    path = (payload.get("project") or {}).get("path_with_namespace")
    iid = attributes.get("iid")
    if not isinstance(path, str) or not isinstance(iid, int):
        return Parsed(kind, [], ignored="No project path and iid in the payload.")
    state = _text(attributes.get("state"), 40)
    if kind == "merge_request":
        key, done, started = f"{path}!{iid}", state == "merged", state in ("opened", "merged")
    else:
        assigned = bool(attributes.get("assignee_ids") or attributes.get("assignee_id") or payload.get("assignees"))
        key, done = f"{path}#{iid}", state == "closed"
        started = done or assigned
    action = _text(attributes.get("action"), 40)
    return Parsed(f"{kind}.{action}" if action else kind, [LinkUpdate(
        TrackerKind.gitlab, key, state, started, done, parse_time(attributes.get("updated_at")),
        _text(attributes.get("title"), 300))])


def parse_jira(payload: dict[str, Any]) -> Parsed:
    """`jira:issue_created` / `jira:issue_updated`: the status's category says started (indeterminate) or done."""
    event = _text(payload.get("webhookEvent"), 60)
    if event not in ("jira:issue_created", "jira:issue_updated"):
        return Parsed(event, [], ignored=f"Jira event “{event}” is not used.")
    issue = payload.get("issue") or {}
    key = issue.get("key")
    fields = issue.get("fields") or {}
    if not isinstance(key, str) or not JIRA_KEY.match(key):
        return Parsed(event, [], ignored="No issue key in the payload.")
    status = fields.get("status") or {}
    category = (status.get("statusCategory") or {}).get("key")
    done = category == "done"
    # Without the issue's `updated`, the delivery's own `timestamp` (checked for age) dates the news, as the
    # generic format's signed `t` does.
    stamp = payload.get("timestamp")
    sent_at = (datetime.fromtimestamp(stamp / 1000, UTC)
               if isinstance(stamp, int) and not isinstance(stamp, bool) and 0 <= stamp < 10**14 else None)
    return Parsed(event, [LinkUpdate(
        TrackerKind.jira, key, _text(status.get("name"), 80), done or category == "indeterminate", done,
        parse_time(fields.get("updated")) or sent_at, _text(fields.get("summary"), 300))])


def parse_generic(payload: dict[str, Any], *, sent_at: datetime | None = None) -> Parsed:
    """Ahead's own format (see the OpenAPI description): `{"links": [{"kind", "key", "status", "done",
    "started"?, "updated_at"?, "title"?}]}`, up to 100 links. A link without `updated_at` is news as of
    `sent_at` (the signed time): it does not override newer dated news a link holds."""
    links = payload.get("links")
    if not isinstance(links, list) or not links or len(links) > 100:
        raise Rejected("`links` must be a list of 1 to 100 objects.", 400)
    updates = []
    for entry in links:
        if not isinstance(entry, dict):
            raise Rejected("Each of `links` must be an object.", 400)
        try:
            kind = TrackerKind(str(entry.get("kind")))
        except ValueError as exc:
            raise Rejected("`kind` must be one of github, gitlab, jira, linear.", 400) from exc
        key, done = entry.get("key"), entry.get("done")
        if not isinstance(key, str) or not key.strip() or len(key) > 200:
            raise Rejected("Each link needs a `key` (text, up to 200 characters).", 400)
        # JSON booleans only: "false" (a string) is truthy in Python and would read as true.
        if not isinstance(done, bool):
            raise Rejected("`done` must be true or false (a JSON boolean).", 400)
        started = entry.get("started", done)
        if not isinstance(started, bool):
            raise Rejected("`started` must be true or false (a JSON boolean).", 400)
        for name in ("status", "title"):
            if entry.get(name) is not None and not isinstance(entry.get(name), str):
                raise Rejected(f"`{name}` must be text.", 400)
        updated = entry.get("updated_at")
        updated_at = parse_time(updated)
        if updated is not None and updated_at is None:
            raise Rejected("`updated_at` must be an ISO 8601 time.", 400)
        updated_at = updated_at or sent_at
        updates.append(LinkUpdate(kind, key.strip(), _text(entry.get("status"), 80) or ("done" if done else "open"),
                                  started or done, done, updated_at, _text(entry.get("title"), 300)))
    return Parsed("links", updates)
