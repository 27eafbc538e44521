"""Inbound tracker webhooks: POST /hooks/{github,gitlab,generic}/{hook id} and /hooks/jira/{hook id}/{secret}.

No session, no cookie, no CSRF token: a tracker is not a browser. Each delivery is authenticated by its own
secret instead — checked over the raw body, in constant time, before the body is parsed — and a refused one
answers 401 and changes nothing (the request's transaction rolls back on any answer >= 400). The body cap
of app/perimeter.py applies as everywhere. Nothing in a payload is ever fetched.
"""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from app.api.schemas import ErrorBody
from app.db import utcnow
from app.deps import DbSession
from app.tech import service as tech
from app.tech import trackers
from app.tech.models import HookKind, TrackerHook, TrackerKind

log = logging.getLogger("ahead.hooks")

PREFIX = "/hooks"
router = APIRouter(prefix=PREFIX, tags=["tracker webhooks"])

GENERIC_DESCRIPTION = f"""Push the status of tracker issues from any automation (CI, a tracker rule, a script).

Make a **Generic JSON** webhook in Admin → Technology roadmap → Webhooks; its address and secret are shown
once. Send `Content-Type: application/json` and the header

    {trackers.GENERIC_HEADER}: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + raw body)>

Deliveries older than `TRACKER_WEBHOOK_TOLERANCE` seconds (900 by default) are refused. Body:

    {{"id": "optional delivery id: the same id twice changes nothing",
     "links": [{{"kind": "jira", "key": "PAY-142", "status": "In review", "done": false,
                "started": true, "updated_at": "2026-12-03T09:00:00Z", "title": "optional"}}]}}

`kind` is github, gitlab, jira or linear; `key` as Ahead shows it (`PAY-142`, `acme/app#88`, `group/app!7`,
`ENG-12`). A generic webhook speaks for the one tracker chosen when it was made, and for the repositories,
groups or project keys it is limited to, if any: a link of another tracker or outside that scope is not updated
(the delivery answers `ignored`, saying which keys were not this webhook's to update). A link whose `updated_at` is not newer than the one it holds keeps its status; without `updated_at`,
the signature's `t` stands for it. `done` and `started` are JSON booleans: any other value (`"false"`, a string,
too) is refused with 400 naming the field. A link the delivery tells nothing new (same status, done and started)
is left as it is and the answer says so. Answers 200 with `outcome` (matched or ignored) and `detail`; 401 for a
missing or wrong signature, 400 for a stale delivery or a body that is not as described, 413 over the body cap."""


class HookAnswer(BaseModel):
    """What a delivery that passed its checks did."""

    outcome: Literal["matched", "ignored"] = Field(description="`matched`: it changed at least one link; "
                                                               "`ignored`: nothing to change, and why in `detail`.")
    detail: str


_ERROR_CODES = {400: "bad_delivery", 401: "unauthorized", 404: "not_found", 415: "unsupported_media_type"}
RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"model": ErrorBody, "description": "A stale delivery, or a body that is not as described"},
    401: {"model": ErrorBody, "description": "A missing or wrong signature: nothing changed"},
    404: {"model": ErrorBody, "description": "No such webhook"},
    413: {"model": ErrorBody, "description": "The body is over MAX_BODY_BYTES"},
    415: {"model": ErrorBody, "description": "The body is not application/json"},
}


def _error(status: int, detail: str) -> JSONResponse:
    return JSONResponse({"error": _ERROR_CODES[status], "detail": detail}, status_code=status)


def _refused(request: Request, session: Session, hook: TrackerHook, exc: trackers.Rejected) -> JSONResponse:
    """Answer a refused delivery (401/400: the request's transaction rolls back, so nothing it read changes)
    and keep its time and reason among the webhook's last refusals, in a short transaction of its own that
    waits for no lock (skipped if it would: the answer is the same), for the admin page; the log has it all."""
    log.warning("tracker webhook %s refused (%s): %s", hook.public_id, hook.kind.value, exc.reason)
    hook_id = hook.id
    session.rollback()  # SQLite: the request's write lock goes before the short write below takes it
    # Not a write session: on SQLite that would wait at BEGIN IMMEDIATE for the write lock.
    own = request.app.state.database.new_session(write=False)
    try:
        if not tech.record_refusal(own, hook_id=hook_id, reason=exc.reason):
            log.info("tracker webhook %s: refusal not kept (a lock was taken)", hook.public_id)
    finally:
        own.close()
    return _error(exc.status, exc.reason)


async def _body(request: Request) -> bytes | JSONResponse:
    media = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        return _error(415, "Send the deliveries as application/json.")
    return await request.body()


def _unknown() -> JSONResponse:
    return _error(404, "There is no such webhook.")


def _header(request: Request, name: str, limit: int = 200) -> str:
    """A header as sent, or "" when absent or longer than any a tracker sends (never a 422 page)."""
    value = request.headers.get(name, "")
    return value if len(value) <= limit else ""


def _find_hook(request: Request, public_id: str, kind: HookKind) -> TrackerHook | None:
    """The webhook, read in a short read-only transaction of its own: the request's own (a write one) begins only
    once a delivery has passed its checks, so on SQLite a refused one never waits for the database's write lock
    that a valid delivery may hold."""
    own = request.app.state.database.new_session(write=False)
    try:
        return tech.find_hook(own, public_id=public_id, kind=kind)
    finally:
        own.close()


def _done(session: Session, hook: TrackerHook, parsed: trackers.Parsed, key: str) -> JSONResponse:
    hook = tech.get_hook(session, hook.id)  # in the request's transaction now (the delivery updates it)
    result = tech.receive(session, hook=hook, parsed=parsed, delivery_key=key)
    return JSONResponse({"outcome": result.outcome.value, "detail": result.detail})


def _body_key(body: bytes) -> str:
    return "sha256:" + hashlib.sha256(body).hexdigest()


@router.post("/github/{hook_id}", include_in_schema=False)
async def github(request: Request, session: DbSession, hook_id: str) -> JSONResponse:
    signature = _header(request, "x-hub-signature-256")
    event, delivery = _header(request, "x-github-event", 60), _header(request, "x-github-delivery", 80)
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    hook = _find_hook(request, hook_id, HookKind.github)
    if hook is None:
        return _unknown()
    try:
        trackers.check_github(tech.hook_secret(request.app.state.settings.secret_key, hook), body, signature)
        if event == "ping":
            parsed = trackers.Parsed("ping", [], ignored="GitHub's ping: the webhook is set up.")
        else:
            parsed = trackers.parse_github(event, trackers.parse_json(body))
    except trackers.Rejected as exc:
        return _refused(request, session, hook, exc)
    return _done(session, hook, parsed, delivery or _body_key(body))


@router.post("/gitlab/{hook_id}", include_in_schema=False)
async def gitlab(request: Request, session: DbSession, hook_id: str) -> JSONResponse:
    token = _header(request, "x-gitlab-token")
    uuid, idempotency = _header(request, "x-gitlab-event-uuid", 80), _header(request, "idempotency-key", 80)
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    hook = _find_hook(request, hook_id, HookKind.gitlab)
    if hook is None:
        return _unknown()
    try:
        trackers.check_token(tech.hook_secret(request.app.state.settings.secret_key, hook), token,
                             name="X-Gitlab-Token")
        parsed = trackers.parse_gitlab(trackers.parse_json(body))
    except trackers.Rejected as exc:
        return _refused(request, session, hook, exc)
    # Idempotency-Key is the same on GitLab's retries; the event UUID too; without either, the body is.
    return _done(session, hook, parsed, idempotency or uuid or _body_key(body))


@router.post("/jira/{hook_id}/{secret}", include_in_schema=False)
async def jira(request: Request, session: DbSession, hook_id: str, secret: str) -> JSONResponse:
    identifier = _header(request, "x-atlassian-webhook-identifier", 80)
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    hook = _find_hook(request, hook_id, HookKind.jira)
    if hook is None:
        return _unknown()
    settings = request.app.state.settings
    try:
        trackers.check_token(tech.hook_secret(settings.secret_key, hook), secret, name="secret in the address")
        payload = trackers.parse_json(body)
        trackers.check_jira_age(payload, now=utcnow(), tolerance=settings.tracker_webhook_tolerance)
        parsed = trackers.parse_jira(payload)
    except trackers.Rejected as exc:
        return _refused(request, session, hook, exc)
    return _done(session, hook, parsed, identifier or _body_key(body))


# Documented by hand, not read by a pydantic model: the body is verified as bytes before it is parsed at all.
_GENERIC_BODY = {
    "type": "object", "required": ["links"],
    "properties": {
        "id": {"type": "string", "maxLength": 90, "description": "The same id twice changes nothing."},
        "links": {"type": "array", "minItems": 1, "maxItems": 100, "items": {
            "type": "object", "required": ["kind", "key", "done"],
            "properties": {
                "kind": {"type": "string", "enum": [k.value for k in TrackerKind]},
                "key": {"type": "string", "minLength": 1, "maxLength": 200},
                "status": {"type": "string", "maxLength": 80},
                "done": {"type": "boolean"},
                "started": {"type": "boolean"},
                "updated_at": {"type": "string", "format": "date-time"},
                "title": {"type": "string", "maxLength": 300},
            }}},
    },
}
_GENERIC_OPENAPI = {
    "parameters": [{"name": trackers.GENERIC_HEADER, "in": "header", "required": True,
                    "schema": {"type": "string", "maxLength": 300},
                    "description": "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, \"<t>.\" + raw body)>"}],
    "requestBody": {"required": True, "content": {"application/json": {"schema": _GENERIC_BODY}}},
}


@router.post("/generic/{hook_id}", summary="Push tracker issue status (generic JSON webhook)",
             description=GENERIC_DESCRIPTION, response_model=HookAnswer, responses=RESPONSES,
             openapi_extra=_GENERIC_OPENAPI)
async def generic(request: Request, session: DbSession, hook_id: str) -> JSONResponse:
    signature = _header(request, trackers.GENERIC_HEADER, 300)
    body = await _body(request)
    if isinstance(body, JSONResponse):
        return body
    hook = _find_hook(request, hook_id, HookKind.generic)
    if hook is None:
        return _unknown()
    settings = request.app.state.settings
    try:
        sent_at = trackers.check_generic(tech.hook_secret(settings.secret_key, hook), body, signature, now=utcnow(),
                                         tolerance=settings.tracker_webhook_tolerance)
        payload = trackers.parse_json(body)
        parsed = trackers.parse_generic(payload, sent_at=sent_at)
    except trackers.Rejected as exc:
        return _refused(request, session, hook, exc)
    given = payload.get("id")
    key = f"id:{given}" if isinstance(given, str) and 0 < len(given) <= 90 else _body_key(body)
    return _done(session, hook, parsed, key)
