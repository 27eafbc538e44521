"""Delivering webhook jobs: the outbox handler of kind "webhook" and the guarded HTTP call it makes.

The call is made by the outbox worker, in a thread of its own, never by a request: a receiver that hangs or
answers 500 slows no page. Each attempt is kept in the delivery log (`webhook_deliveries`) with what was sent,
the status, the first RESPONSE_CAP bytes of the answer and how long it took.

Server-side request forgery: the host is resolved here, and the call is refused when ANY of its addresses is
not a public one (private, loopback, link-local, multicast, reserved, …) unless the admin setting allows
private targets. The connection then goes to the address that was checked (the URL's host becomes that
address; the Host header and TLS's SNI and certificate check keep the name), so DNS cannot answer differently
a moment later (rebinding). Redirects are not followed, the whole call has a deadline, and the answer is read
up to a small cap. In production only https:// targets are called.
"""

from __future__ import annotations

import ipaddress
import json
import socket
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx2
from sqlalchemy.orm import Session

from app import outbox
from app.config import get_settings
from app.outbox.registry import THREE_DAYS_SCHEDULE
from app.webhooks import service as webhooks
from app.webhooks.models import WebhookEndpoint

RESPONSE_CAP = 4096  # bytes of a receiver's answer kept in the log
CONNECT_TIMEOUT = 5.0
TOTAL_TIMEOUT = 10.0  # seconds for the whole call, however slowly the receiver drips its answer
USER_AGENT = "Ahead-Webhooks/1"


class Refused(Exception):
    """The target may not be called (its address, its scheme): not retried, since it cannot change by itself."""


@dataclass(slots=True)
class Attempt:
    status_code: int | None
    duration_ms: int
    error: str = ""
    body: str = ""

    @property
    def ok(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def _resolve(host: str, port: int) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        literal = ipaddress.ip_address(host)
    except ValueError:
        pass
    else:
        return [literal]
    try:
        return webhooks.addresses_of(host, port)
    except socket.gaierror as exc:
        raise ConnectionError(f"the name {host} does not resolve ({exc.strerror})") from None


def pinned_target(url: str, *, allow_private: bool, require_https: bool) -> tuple[str, str, str]:
    """(the URL with the checked address in place of the name, the Host header, the TLS server name).
    Refused for a scheme or an address the rules forbid."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise Refused("not an http(s) address")
    if require_https and parts.scheme != "https":
        raise Refused("only https:// addresses are called in production")
    host = parts.hostname
    port = parts.port or (443 if parts.scheme == "https" else 80)
    addresses = _resolve(host, port)
    if not addresses:
        raise ConnectionError(f"the name {host} has no address")
    if not allow_private:
        blocked = [a for a in addresses if not webhooks.is_public_address(a)]
        if blocked:
            raise Refused(f"{host} resolves to {blocked[0]}, a private or reserved address; an admin can allow "
                          f"private addresses on the Webhooks page")
    chosen = addresses[0]
    shown = f"[{chosen}]" if chosen.version == 6 else str(chosen)
    netloc = f"{shown}:{parts.port}" if parts.port else shown
    host_header = parts.netloc.rsplit("@", 1)[-1]
    return urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, "")), host_header, host


def post(url: str, body: bytes, headers: dict[str, str], *, allow_private: bool, require_https: bool) -> Attempt:
    """One guarded POST; never raises for what the receiver does (it is in the Attempt)."""
    started = time.monotonic()

    def took() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        target, host_header, server_name = pinned_target(url, allow_private=allow_private,
                                                         require_https=require_https)
    except Refused:
        raise
    except (ConnectionError, OSError, ValueError) as exc:
        return Attempt(None, took(), str(exc))
    timeout = httpx2.Timeout(TOTAL_TIMEOUT, connect=CONNECT_TIMEOUT)
    extensions: dict[str, Any] = {"sni_hostname": server_name} if target.startswith("https:") else {}
    try:
        with httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=False) as client:
            request = client.build_request("POST", target, content=body, extensions=extensions, headers={
                **headers, "Host": host_header, "Content-Type": "application/json", "User-Agent": USER_AGENT})
            response = client.send(request, stream=True)
            try:
                kept = bytearray()
                for chunk in response.iter_raw():
                    kept += chunk
                    if len(kept) >= RESPONSE_CAP or time.monotonic() - started > TOTAL_TIMEOUT:
                        break
            finally:
                response.close()
            text = bytes(kept[:RESPONSE_CAP]).decode("utf-8", "replace")
            error = "" if 200 <= response.status_code < 300 else f"the receiver answered {response.status_code}"
            if 300 <= response.status_code < 400:
                error += " (redirects are not followed)"
            return Attempt(response.status_code, took(), error, text)
    except httpx2.TimeoutException:
        return Attempt(None, took(), f"no answer within {TOTAL_TIMEOUT:g} s")
    except httpx2.HTTPError as exc:
        return Attempt(None, took(), f"{type(exc).__name__}: {exc}"[:500])


def _dead(session: Session, job: outbox.Job) -> None:
    webhooks.disable_failing(session, endpoint_id=int(job.payload["endpoint_id"]),
                             reason=f"Deliveries failed for three days ({job.attempts} attempts).")


@outbox.handler(webhooks.KIND, schedule=THREE_DAYS_SCHEDULE, on_dead=_dead, lane="webhooks")
def deliver(session: Session, job: outbox.Job) -> None:
    payload = job.payload
    endpoint = session.get(WebhookEndpoint, int(payload["endpoint_id"]))
    if endpoint is None:
        return  # deleted since: nobody to call
    if not endpoint.is_active and not payload.get("test"):
        raise outbox.Failed("the endpoint is turned off")
    if payload.get("check") and not webhooks.still_published(session, payload["check"]):
        return
    url, secret, endpoint_id = endpoint.url, endpoint.secret, endpoint.id
    allow_private = webhooks.allow_private_targets(session)
    # Nothing is held while the receiver is called (on SQLite a write transaction holds the database's lock).
    session.rollback()
    event = payload["event"]
    body = json.dumps(event, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = int(time.time())
    headers = {"webhook-id": payload["message_id"], "webhook-timestamp": str(timestamp),
               "webhook-signature": webhooks.sign(secret, payload["message_id"], timestamp, body)}
    attempt_no = job.attempts + 1
    try:
        attempt = post(url, body, headers, allow_private=allow_private,
                       require_https=get_settings().is_production)
    except Refused as exc:
        webhooks.record_attempt(session, endpoint_id=endpoint_id, message_id=payload["message_id"],
                                event_type=event["type"], payload=event, attempt=attempt_no, url=url,
                                status_code=None, duration_ms=0, error=f"Refused: {exc}")
        session.commit()
        raise outbox.Failed(f"refused: {exc}") from None
    webhooks.record_attempt(session, endpoint_id=endpoint_id, message_id=payload["message_id"],
                            event_type=event["type"], payload=event, attempt=attempt_no, url=url,
                            status_code=attempt.status_code, duration_ms=attempt.duration_ms,
                            error=attempt.error, response_body=attempt.body)
    if attempt.ok:
        return  # the log row is committed with the job marked done
    session.commit()  # the log keeps the failed attempt; the retry is the outbox's
    if payload.get("test"):
        raise outbox.Failed(attempt.error)  # a test or a redelivery is tried once: the admin is watching
    raise outbox.Retry(attempt.error)
