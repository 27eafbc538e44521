"""Webhooks: endpoints, events, signing (Standard Webhooks) and the delivery log. All SQL of webhooks lives here.

A change that is an event calls `emit(session, event_type, data)` in its own transaction. When no active
endpoint wants that event (the usual case, and the vote's), that costs a dictionary lookup: the subscriptions
are kept per process under the settings revision, which every change to an endpoint moves (app/revision.py).
Otherwise one outbox job per endpoint is enqueued in the same transaction (app/outbox), so a rolled-back change
calls nobody and a committed one is delivered by the worker, retried for three days (app/webhooks/delivery.py).

Payloads (docs/webhooks.md): `{"type", "timestamp", "version", "data"}`; `data.changes` says what changed as
`{field: {"before": …, "after": …}}`. The calls are signed as the Standard Webhooks specification says:
`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
with the secret `whsec_<base64 key>`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
import secrets
import socket
import threading
import uuid
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import field_validator
from sqlalchemy import func, inspect, select
from sqlalchemy.orm import Session, object_session

from app import revision
from app.accounts.models import Role, User
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.changelog.models import ChangelogEntry
from app.config import get_settings
from app.db import utcnow
from app.errors import NotFound
from app.forms import FormModel, checkbox, refuse, text
from app.outbox import service as outbox
from app.portal.models import PortalSetting
from app.roadmap.models import Item, Product, Stage
from app.webhooks.models import WebhookDelivery, WebhookEndpoint

KIND = "webhook"
PAYLOAD_VERSION = 1
TEST_EVENT = "webhook.test"
# The events an endpoint can subscribe to, with what an admin reads next to each.
EVENTS: dict[str, str] = {
    "item.published": "An item is published",
    "item.updated": "An item's text, product, timeframe, visibility or tags change",
    "item.stage_changed": "An item moves to another stage",
    "item.released": "An item moves to a released stage",
    "vote.created": "Someone votes (a vote captured by staff too)",
    "vote.removed": "Someone withdraws a vote",
    "comment.created": "Someone comments",
    "feedback.created": "An idea or private feedback arrives",
    "changelog.published": "A changelog entry is published (at its time, when scheduled)",
}
SETTING_KEY = "webhooks"

_lock = threading.Lock()
_subscriptions: tuple[int, dict[str, tuple[int, ...]]] | None = None


# --- signing (Standard Webhooks) -------------------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def sign(secret: str, message_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` header's value: `v1,` and the base64 HMAC-SHA256 of `{id}.{timestamp}.{body}`,
    keyed with the secret's bytes (the base64 after `whsec_`)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    mac = hmac.new(key, f"{message_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()
    return "v1," + base64.b64encode(mac).decode()


# --- the admin setting: private targets ------------------------------------------------------------------


def allow_private_targets(session: Session) -> bool:
    row = session.get(PortalSetting, SETTING_KEY)
    return bool(row is not None and isinstance(row.value, dict) and row.value.get("allow_private"))


def set_allow_private_targets(session: Session, *, allow: bool, actor: User) -> bool:
    """False when nothing changed."""
    before = allow_private_targets(session)
    if before == allow:
        return False
    row = session.get(PortalSetting, SETTING_KEY)
    if row is None:
        session.add(PortalSetting(key=SETTING_KEY, value={"allow_private": allow}))
    else:
        row.value = {**(row.value or {}), "allow_private": allow}
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.settings_webhooks, entity_type="setting",
                 label="Webhooks", changes={"allow_private": [before, allow]})
    return True


# --- events ----------------------------------------------------------------------------------------------


def _subscribed(session: Session) -> dict[str, tuple[int, ...]]:
    """Active endpoints per event, kept until the settings revision moves."""
    global _subscriptions
    rev = revision.settings(session)
    kept = _subscriptions
    if kept is not None and kept[0] == rev:
        return kept[1]
    by_event: dict[str, list[int]] = {}
    for endpoint_id, events in session.execute(
            select(WebhookEndpoint.id, WebhookEndpoint.events).where(WebhookEndpoint.is_active.is_(True))):
        for event in events or []:
            by_event.setdefault(event, []).append(endpoint_id)
    value = {event: tuple(ids) for event, ids in by_event.items()}
    with _lock:
        _subscriptions = (rev, value)
    return value


def clear_cache() -> None:
    global _subscriptions
    _subscriptions = None


def emit(session: Session, event_type: str, data: dict[str, Any], *, run_at: datetime | None = None,
         check: dict[str, Any] | None = None) -> int:
    """Enqueue `event_type` for every active endpoint that wants it, in the caller's transaction; how many.
    `run_at` delays it (a scheduled changelog entry); `check` is what the delivery verifies first (that the
    entry is still published at that time)."""
    endpoint_ids = _subscribed(session).get(event_type)
    if not endpoint_ids:
        return 0
    message_id = f"msg_{uuid.uuid4().hex}"
    payload = {"type": event_type, "timestamp": iso(run_at or utcnow()), "version": PAYLOAD_VERSION, "data": data}
    outbox.enqueue_many(session, KIND, [
        ({"endpoint_id": endpoint_id, "message_id": message_id, "event": payload, **({"check": check} if check else {})},
         f"{KIND}:{message_id}:{endpoint_id}")
        for endpoint_id in endpoint_ids], run_at=run_at)
    return len(endpoint_ids)


def iso(moment: datetime | None) -> str | None:
    return moment.isoformat(timespec="seconds").replace("+00:00", "Z") if moment else None


def _loaded(obj: Any, name: str) -> Any:
    return None if name in inspect(obj).unloaded else getattr(obj, name)


def absolute(path: str) -> str:
    """A portal path as the absolute address payloads carry: BASE_URL + path."""
    return get_settings().base_url + path


def _related(item: Item, name: str, model: type[Product] | type[Stage], key: int | None) -> Any:
    """The item's product or stage: the loaded one, else from the session (its identity map, mostly)."""
    loaded = _loaded(item, name)
    if loaded is not None or key is None:
        return loaded
    session = object_session(item)
    return session.get(model, key) if session is not None else None


def item_data(item: Item) -> dict[str, Any]:
    """An item as every payload carries it (the one serializer of items): its product and stage always, loaded
    by the caller or fetched here (the relationships are lazy="raise")."""
    product = _related(item, "product", Product, item.product_id)
    stage = _related(item, "stage", Stage, item.stage_id)
    return {
        "id": item.public_id, "title": item.title, "summary": item.summary,
        "url": absolute(item.path), "visibility": item.visibility.value,
        "published": item.published_at is not None, "released_at": iso(item.released_at),
        "product": {"slug": product.slug, "name": product.name} if product is not None else None,
        "stage": {"slug": stage.slug, "name": stage.name} if stage is not None else None,
    }


def person(user: Any) -> dict[str, Any] | None:
    """Who did it, as payloads name people (the admins who configured the endpoint know them)."""
    if user is None:
        return None
    # An integration (a tracker's webhook) acts too: it has a label for an email and no name.
    return {"email": getattr(user, "email", None), "name": getattr(user, "display_name", None) or None}


def wants(session: Session, event_type: str) -> bool:
    """Whether an active endpoint wants this event (ask before building a costly payload)."""
    return bool(_subscribed(session).get(event_type))


def emit_vote(session: Session, event_type: str, *, item: Item, user: User, importance: Any = None,
              captured_by: User | None = None) -> None:
    """A vote event; the vote path asks `wants` first, before its write, so that nobody subscribing costs it
    no statement at all."""
    vote: dict[str, Any] = {"voter": person(user)}
    if importance is not None:
        vote["importance"] = getattr(importance, "name", str(importance))
    if captured_by is not None:
        vote["captured_by"] = person(captured_by)
    emit(session, event_type, {"item": item_data(item), "vote": vote})


def changes(diff: dict[str, list[Any]]) -> dict[str, dict[str, Any]]:
    """An audit diff ({field: [before, after]}) as payloads say it. Internal notes never leave the portal."""
    return {k: {"before": v[0], "after": v[1]} for k, v in diff.items() if k != "internal_notes"}


# --- endpoints (admin) -----------------------------------------------------------------------------------


def _url(value: Any) -> Any:
    raw = str(value or "").strip()
    if not raw:
        raise refuse("Give the address to call.")
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise refuse("That is not a web address (https://…).") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse("That is not a web address (https://…).")
    if parts.username or parts.password:
        raise refuse("Leave user names and passwords out of the address; the calls are signed instead.")
    if get_settings().is_production and parts.scheme != "https":
        raise refuse("The address must start with https:// (the calls carry your roadmap's data).")
    del port
    return raw


class EndpointCreate(FormModel):
    url: Annotated[str, text(2000)] = ""
    description: Annotated[str, text(200, one_line="The description is one line.")] = ""
    events: tuple[str, ...] = ()
    is_active: Annotated[bool, checkbox()] = True

    @field_validator("url", mode="after")
    @classmethod
    def _check_url(cls, value: str) -> str:
        return str(_url(value))

    @field_validator("events", mode="after")
    @classmethod
    def _check_events(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise refuse("Choose at least one event.")
        if any(v not in EVENTS for v in value):
            raise refuse("Choose events from the list.")
        return tuple(e for e in EVENTS if e in value)


def list_endpoints(session: Session) -> list[WebhookEndpoint]:
    return list(session.scalars(select(WebhookEndpoint).order_by(WebhookEndpoint.created_at, WebhookEndpoint.id)))


def get_endpoint(session: Session, endpoint_id: int) -> WebhookEndpoint:
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None:
        raise NotFound()
    return endpoint


def _snapshot(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"url": endpoint.url, "description": endpoint.description, "events": list(endpoint.events),
            "is_active": endpoint.is_active}


def create_endpoint(session: Session, *, data: EndpointCreate, actor: User) -> WebhookEndpoint:
    now = utcnow()
    endpoint = WebhookEndpoint(url=data.url, description=data.description, events=list(data.events),
                               is_active=data.is_active, secret=new_secret(), created_by_id=actor.id,
                               created_at=now, updated_at=now)
    session.add(endpoint)
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.webhook_created, entity=endpoint, entity_type="webhook",
                 label=endpoint.url, changes=audit.diff({}, _snapshot(endpoint)))
    return endpoint


def update_endpoint(session: Session, *, endpoint: WebhookEndpoint, data: EndpointCreate, actor: User) -> bool:
    before = _snapshot(endpoint)
    endpoint.url, endpoint.description, endpoint.events = data.url, data.description, list(data.events)
    if data.is_active and not endpoint.is_active:
        endpoint.disabled_reason = ""
    endpoint.is_active = data.is_active
    diff = audit.diff(before, _snapshot(endpoint))
    if not diff:
        return False
    endpoint.updated_at = utcnow()
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.webhook_updated, entity=endpoint, entity_type="webhook",
                 label=endpoint.url, changes=diff)
    return True


def rotate_secret(session: Session, *, endpoint: WebhookEndpoint, actor: User) -> None:
    endpoint.secret, endpoint.updated_at = new_secret(), utcnow()
    session.flush()
    audit.record(session, actor=actor, action=AuditAction.webhook_secret_rotated, entity=endpoint,
                 entity_type="webhook", label=endpoint.url)


def delete_endpoint(session: Session, *, endpoint: WebhookEndpoint, actor: User) -> None:
    audit.record(session, actor=actor, action=AuditAction.webhook_deleted, entity=endpoint, entity_type="webhook",
                 label=endpoint.url, changes=audit.diff(_snapshot(endpoint), {}))
    session.delete(endpoint)
    session.flush()


def send_test(session: Session, *, endpoint: WebhookEndpoint, actor: User) -> str:
    """Enqueue a `webhook.test` event for this endpoint only (active or not); its message id."""
    message_id = f"msg_{uuid.uuid4().hex}"
    event = {"type": TEST_EVENT, "timestamp": iso(utcnow()), "version": PAYLOAD_VERSION,
             "data": {"endpoint": endpoint.id, "sent_by": actor.email}}
    outbox.enqueue(session, KIND, {"endpoint_id": endpoint.id, "message_id": message_id, "event": event,
                                   "test": True}, key=f"{KIND}:{message_id}:{endpoint.id}")
    return message_id


def redeliver(session: Session, *, delivery: WebhookDelivery) -> None:
    """Send the delivery's message again (same webhook-id, so a receiver that got it already can tell)."""
    outbox.enqueue(session, KIND, {"endpoint_id": delivery.endpoint_id, "message_id": delivery.message_id,
                                   "event": delivery.payload, "test": True},
                   key=f"{KIND}:{delivery.message_id}:{delivery.endpoint_id}:again:{uuid.uuid4().hex}")


def list_deliveries(session: Session, *, endpoint: WebhookEndpoint, limit: int = 50) -> list[WebhookDelivery]:
    return list(session.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint.id)
                                .order_by(WebhookDelivery.id.desc()).limit(limit)))


def get_delivery(session: Session, *, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery:
    delivery = session.scalar(select(WebhookDelivery).where(WebhookDelivery.id == delivery_id,
                                                            WebhookDelivery.endpoint_id == endpoint.id))
    if delivery is None:
        raise NotFound()
    return delivery


def count_failing(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(WebhookEndpoint).where(
        WebhookEndpoint.disabled_reason != "")) or 0


# --- used by the delivery (app/webhooks/delivery.py) -----------------------------------------------------


def record_attempt(session: Session, **values: Any) -> None:
    session.add(WebhookDelivery(**values))
    session.flush()


def disable_failing(session: Session, *, endpoint_id: int, reason: str) -> None:
    """Turn an endpoint off after its deliveries failed for three days, and tell every active admin."""
    endpoint = session.get(WebhookEndpoint, endpoint_id)
    if endpoint is None or not endpoint.is_active:
        return
    endpoint.is_active, endpoint.disabled_reason, endpoint.updated_at = False, reason[:2000], utcnow()
    session.flush()
    audit.record(session, actor=None, action=AuditAction.webhook_disabled, entity=endpoint, entity_type="webhook",
                 label=endpoint.url, changes={"is_active": [True, False]})
    admins = session.scalars(select(User).where(User.role == Role.admin, User.is_active.is_(True),
                                                User.deleted_at.is_(None)))
    for admin in admins:
        outbox.enqueue_email(session, to=admin.email, template="webhook_disabled",
                             context={"url": endpoint.url, "reason": reason[:500], "endpoint_id": endpoint.id,
                                      "base_url": get_settings().base_url},
                             key=f"webhook_disabled:{endpoint.id}:{endpoint.updated_at.isoformat()}:{admin.id}")


def still_published(session: Session, check: dict[str, Any]) -> bool:
    """A scheduled changelog entry's event goes only if the entry is still published at that moment."""
    public_id, published_at = check.get("changelog_entry"), check.get("published_at")
    if not isinstance(public_id, str):
        return False
    entry = session.scalar(select(ChangelogEntry).where(ChangelogEntry.public_id == public_id))
    return entry is not None and entry.published_at is not None and iso(entry.published_at) == published_at


def refused_address(session: Session, url: str) -> str | None:
    """The address a webhook's URL names that its calls will be refused for (private, loopback, link-local,
    reserved: `is_public_address`) while private targets are not allowed, for the admin pages to say so before any
    call fails; None when there is none or they are allowed. Only what the URL itself says: an address in any
    numeric spelling (`127.1`, `2130706433`, `[::ffff:127.0.0.1]`) or `localhost`. A name is judged when it is
    called (app/webhooks/delivery.py): what it resolves to may change."""
    if allow_private_targets(session):
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    if host == "localhost" or host.endswith(".localhost"):
        return host
    try:
        addresses = addresses_of(host, look_up=False)
    except (socket.gaierror, UnicodeError):
        return None
    return next((str(a) for a in addresses if not is_public_address(a)), None)


def addresses_of(host: str, port: int | None = None, *, look_up: bool = True
                 ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    """The addresses `host` stands for, each once: itself in any numeric spelling (`127.1`, `2130706433`), or, when
    `look_up`, what its name resolves to (socket.gaierror when it names nothing, or is a name and not `look_up`)."""
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=0 if look_up else socket.AI_NUMERICHOST)
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if address not in found:
            found.append(address)
    return found


def is_public_address(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Whether a webhook may call this address without the admin setting: globally routable unicast only
    (no private, loopback, link-local, multicast, reserved, shared or unspecified range; an IPv4 address
    inside IPv6 is judged as itself)."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast
