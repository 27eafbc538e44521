"""What reaches the app: request bodies within their cap, and the client's real address behind a proxy.

Both are plain ASGI middleware, outside everything else, so no route, form parser or dependency can read a
body past its cap or see an address the operator did not vouch for.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterable
from typing import Any

from starlette.exceptions import HTTPException


def _mib(size: int) -> str:
    return f"{size / (1024 * 1024):g} MiB" if size >= 1024 * 1024 else f"{size // 1024} KiB"


class BodyTooLarge(HTTPException):
    """Raised from `receive` once a streamed body passes its cap; the app's error handler answers 413."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"The request is larger than the {_mib(limit)} this address accepts, so it was "
                              "not read and nothing was changed.")


class BodyLimitMiddleware:
    """Caps every request body at `max_body` bytes, and at `max_upload` on the upload routes.

    A Content-Length over the cap is answered 413 before the app runs and before a byte of the body is read.
    A body without one (chunked) is counted as it streams: past the cap, `receive` raises BodyTooLarge, the
    app answers 413 through its error pages, and nothing more is read (the server then closes the
    connection rather than drain it). Nothing here buffers a body.
    """

    def __init__(self, app: Any, *, max_body: int, max_upload: int, upload_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_body = max_body
        self.max_upload = max_upload
        self.upload_paths = frozenset(upload_paths)

    def limit_for(self, scope: dict[str, Any]) -> int:
        if scope["method"] == "POST" and scope["path"] in self.upload_paths:
            return self.max_upload
        return self.max_body

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, send, BodyTooLarge(limit))
            return

        received = 0
        started = False

        async def capped_receive() -> dict[str, Any]:
            nonlocal received
            message: dict[str, Any] = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def watching_send(message: dict[str, Any]) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, capped_receive, watching_send)
        except BodyTooLarge as exc:
            # Raised where no error handler saw it (outside a route): answer here if nothing was sent yet.
            if started:
                raise
            await _refuse(scope, send, exc)


def _content_length(scope: dict[str, Any]) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(scope: dict[str, Any], send: Any, exc: BodyTooLarge) -> None:
    """A 413 without the app (it has not run): JSON for the API and for callers asking for it, else a page."""
    accept = dict(scope["headers"]).get(b"accept", b"").decode("latin-1")
    if scope["path"].startswith(("/api/", "/hooks/")) or "application/json" in accept.split(",")[0]:
        body = json.dumps({"error": "too_large", "detail": exc.detail}).encode()
        content_type = b"application/json"
    else:
        body = (f"<!doctype html><html lang=en><meta charset=utf-8><title>Too large</title>"
                f"<h1>Too large</h1><p>{exc.detail}</p>").encode()
        content_type = b"text/html; charset=utf-8"
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class TrustedProxyMiddleware:
    """The client's address and scheme, from X-Forwarded-For / X-Forwarded-Proto only when the peer that
    connected is one of TRUSTED_PROXIES.

    X-Forwarded-For is read from the right: each proxy appends the address it received the request from, so
    the right-most address that is not itself a trusted proxy is the client; anything to its left was written
    by the client and is ignored. From any other peer the headers are ignored entirely. Rate limits, the
    access log and every `request.client` then see the same address.
    """

    def __init__(self, app: Any, *, trusted: Iterable[Network]) -> None:
        self.app = app
        self.trusted = tuple(trusted)

    def is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in self.trusted)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self.trusted:
            client = scope.get("client")
            if client and self.is_trusted(client[0]):
                # In place, as uvicorn's own proxy middleware does: its access log reads this scope.
                headers = _headers(scope, (b"x-forwarded-for", b"x-forwarded-proto"))
                forwarded = headers.get(b"x-forwarded-for")
                if forwarded:
                    scope["client"] = (self.client_from(forwarded, peer=client[0]), 0)
                proto = headers.get(b"x-forwarded-proto", "").split(",")[-1].strip().lower()
                if proto in ("http", "https"):
                    scope["scheme"] = proto if scope["type"] == "http" else {"http": "ws", "https": "wss"}[proto]
        await self.app(scope, receive, send)

    def client_from(self, forwarded: str, *, peer: str) -> str:
        hops = [hop.strip() for hop in forwarded.split(",") if hop.strip()]
        address = peer
        for hop in reversed(hops):
            try:
                address = str(ipaddress.ip_address(hop))
            except ValueError:
                break  # not an address a proxy of ours would write: stop at the last good one
            if not self.is_trusted(address):
                break
        return address


def _headers(scope: dict[str, Any], names: tuple[bytes, ...]) -> dict[bytes, str]:
    """The named headers, repeated ones joined with commas as HTTP allows."""
    found: dict[bytes, list[str]] = {}
    for name, value in scope["headers"]:
        if name in names:
            found.setdefault(name, []).append(value.decode("latin-1"))
    return {name: ", ".join(values) for name, values in found.items()}
