"""Security headers, the CSRF token and its check."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

from fastapi import Request

from app.errors import CsrfFailed

CSRF_COOKIE = "ahead_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


class IsolatedStateMiddleware:
    """Gives every request a state dict of its own.

    Servers hand the lifespan state to each request, and not all of them copy it; the viewer and
    the CSRF cookie are cached in the request state, so a shared dict would leak one person's
    identity into another's request.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            scope["state"] = dict(scope.get("state") or {})
        await self.app(scope, receive, send)


class SecurityHeadersMiddleware:
    """Adds the headers to every response; a route may set its own CSP (the embed widget will)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in _HEADERS if h[0] not in present)
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_wrapper)


class CsrfTokens:
    """Double-submit token: a random value in an HttpOnly cookie, and its HMAC in forms and headers.

    The page carries HMAC(secret, cookie), so a cookie planted by a sibling subdomain is useless
    without the server's key.
    """

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("csrf:" + secret).encode()).digest()

    def new_cookie_value(self) -> str:
        return secrets.token_urlsafe(32)

    def form_token(self, cookie_value: str) -> str:
        return hmac.new(self._key, cookie_value.encode(), hashlib.sha256).hexdigest()

    def valid(self, cookie_value: str | None, submitted: str | None) -> bool:
        if not cookie_value or not submitted:
            return False
        return hmac.compare_digest(self.form_token(cookie_value), submitted)


def csrf_cookie_value(request: Request) -> str:
    """The request's CSRF cookie value, minting one (set on the response by the middleware) if absent."""
    state = request.scope.setdefault("state", {})
    value = state.get("csrf_cookie") or request.cookies.get(CSRF_COOKIE)
    if not value or len(value) > 100:
        value = request.app.state.csrf.new_cookie_value()
        state["csrf_new"] = True
    state["csrf_cookie"] = value
    return value


def csrf_token(request: Request) -> str:
    return request.app.state.csrf.form_token(csrf_cookie_value(request))


def rotate_csrf(request: Request) -> None:
    """A fresh token at sign-in and sign-out."""
    state = request.scope.setdefault("state", {})
    state["csrf_cookie"] = request.app.state.csrf.new_cookie_value()
    state["csrf_new"] = True


class CsrfCookieMiddleware:
    """Sets the CSRF cookie when a page minted a new one."""

    def __init__(self, app: Any, *, secure: bool) -> None:
        self.app = app
        self.secure = secure

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state", {})
                if state.get("csrf_new"):
                    cookie = f"{CSRF_COOKIE}={state['csrf_cookie']}; Path=/; HttpOnly; SameSite=Lax"
                    if self.secure:
                        cookie += "; Secure"
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_wrapper)


async def verify_csrf(request: Request) -> None:
    """Dependency for every state-changing route: the form field or X-CSRF-Token must match."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    submitted = request.headers.get(CSRF_HEADER)
    if not submitted:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
    if not request.app.state.csrf.valid(request.cookies.get(CSRF_COOKIE), submitted):
        raise CsrfFailed()
