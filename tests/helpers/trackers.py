"""Tracker webhook deliveries as the trackers send them, for the tests of tests/tech."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

from app.tech import service as tech
from app.tech.models import BacklogLink, HookKind

PAYLOADS = Path(__file__).resolve().parents[1] / "tech" / "payloads"


def payload(name: str) -> bytes:
    return (PAYLOADS / name).read_bytes()


def make_hook(session, pm, kind: HookKind, settings, *, tracker: str | None = None, scope: str = "",
              name: str = ""):  # type: ignore[no-untyped-def]
    """A webhook and its secret; a generic one reports `tracker` (required for it), limited to `scope`."""
    data = tech.HookForm(name=name or f"{kind.value} hook", kind=kind, tracker=tracker, scope=scope)
    hook = tech.create_hook(session, data=data, actor=pm)
    return hook, tech.hook_secret(settings.secret_key, hook)


def link(session, item, kind: str, key: str, **extra):  # type: ignore[no-untyped-def]
    row = BacklogLink(item_id=item.id, kind=kind, key=key, **({"url": "", "title": "", "status": "open", "done": False,
                                                              "started": False} | extra))
    session.add(row)
    session.flush()
    return row


def github_headers(secret: str, body: bytes, event: str = "issues", delivery: str = "d-1") -> dict[str, str]:
    signature = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return {"content-type": "application/json", "x-github-event": event, "x-github-delivery": delivery,
            "x-hub-signature-256": signature}


def jira_body(age_seconds: int = 0) -> bytes:
    data = json.loads(payload("jira_issue_updated.json"))
    data["timestamp"] = int((time.time() - age_seconds) * 1000)
    return json.dumps(data).encode()
