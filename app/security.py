"""Security headers, cookie names, the CSRF token and the checks of unsafe requests (origin, token)."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from fastapi import Request

from app.errors import CrossOriginRefused, CsrfFailed

# The cookies' names over http (development, tests); over https they carry the __Host- prefix.
SESSION_COOKIE = "ahead_session"
CSRF_COOKIE = "ahead_csrf"
OIDC_COOKIE = "ahead_oidc"
FLASH_COOKIE = "ahead_flash"
HOST_PREFIX = "__Host-"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


@dataclass(frozen=True)
class Cookies:
    """The names and flags of the portal's own cookies.

    When BASE_URL is https they are `__Host-` cookies: the browser accepts them only with Secure, Path=/ and
    no Domain, so neither a sibling subdomain nor a plain-http page on the same host can set or replace them.
    """

    session: str
    csrf: str
    oidc: str
    oidc_path: str
    secure: bool
    flash: str = FLASH_COOKIE

    @classmethod
    def for_settings(cls, settings: Any) -> Cookies:
        if settings.https:
            return cls(session=HOST_PREFIX + SESSION_COOKIE, csrf=HOST_PREFIX + CSRF_COOKIE,
                       oidc=HOST_PREFIX + OIDC_COOKIE, oidc_path="/", secure=True, flash=HOST_PREFIX + FLASH_COOKIE)
        return cls(session=SESSION_COOKIE, csrf=CSRF_COOKIE, oidc=OIDC_COOKIE, oidc_path="/auth",
                   secure=settings.secure_cookies)


def cookies(request: Request) -> Cookies:
    names: Cookies = request.app.state.cookies
    return names


def session_cookie_value(request: Request) -> str | None:
    return request.cookies.get(cookies(request).session)


def set_session_cookie(request: Request, response: Any, token: str, *, max_age: int) -> None:
    names = cookies(request)
    response.set_cookie(names.session, token, httponly=True, samesite="lax", secure=names.secure,
                        max_age=max_age, path="/")


def set_flash_cookie(request: Request, response: Any, value: str) -> None:
    """The next page's message (signed, not secret, yet it may name an address or carry an invitation link)."""
    names = cookies(request)
    response.set_cookie(names.flash, value, httponly=True, samesite="lax", path="/", secure=names.secure)


def clear_flash_cookie(request: Request, response: Any) -> None:
    names = cookies(request)
    response.delete_cookie(names.flash, path="/", secure=names.secure, httponly=True, samesite="lax")


def clear_session_cookie(request: Request, response: Any) -> None:
    # A __Host- cookie is replaced (here: expired) only by one with the same flags.
    names = cookies(request)
    response.delete_cookie(names.session, path="/", secure=names.secure, httponly=True, samesite="lax")

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


# A page whose address holds an email's secret (unsubscribe, email preferences, a changelog subscription's
# confirmation): not stored, not indexed, and its address sent on in no Referer, not even to this site, whose access
# logs keep them. `strict-origin` (the origin alone) rather than `no-referrer`: under `no-referrer` browsers send the
# page's own forms with `Origin: null` (the Fetch standard), which verify_origin refuses: a visitor could not confirm
# a changelog subscription (a walk-through in Chromium).
LINK_PAGE_HEADERS = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex", "Referrer-Policy": "strict-origin"}


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


MAX_KEPT_VALUE = 100  # longer cookie values than the app makes (43 characters) are never kept with their token


class CsrfTokens:
    """Double-submit token bound to the session: a random value in an HttpOnly cookie, and in forms and
    headers HMAC(key, cookie value, session cookie value).

    Without the server's key a cookie planted by a sibling subdomain is useless; and because the session
    cookie is part of the message, a token fetched before signing in (by anyone, the visitor's own browser
    included) does not work for the session that sign-in starts.

    Pages carry the token masked afresh for each answer (`masked`): a random pad and the token XOR the pad. The
    token itself is the same for a person's whole session, and sits in compressed pages beside text an attacker
    can choose (the search box shows `q`): from the compressed lengths of many answers, a BREACH-style attack
    could guess it a character at a time. A value that differs in every answer gives those lengths nothing to
    converge on. `valid` takes a masked token and, for pages rendered before masking, the bare one.
    """

    MAX_KEPT = 10_000

    def __init__(self, secret: str) -> None:
        self._key = hashlib.sha256(("csrf:" + secret).encode()).digest()
        # (cookie, session) -> token: a vote checks the token sent and puts the same one in the widget it answers
        # with, and a person's next request has the same pair; anyone can make pairs up, so it starts again when full
        self._kept: dict[tuple[str, str], str] = {}

    def new_cookie_value(self) -> str:
        return secrets.token_urlsafe(32)

    def form_token(self, cookie_value: str, session_value: str = "", *, keep: bool = True) -> str:
        token = self._kept.get((cookie_value, session_value))
        if token is None:
            # Length-prefixed, so that no other split of the same characters gives the same message.
            message = f"{len(cookie_value)}:{cookie_value}:{session_value}".encode()
            token = hmac.new(self._key, message, hashlib.sha256).hexdigest()
            if keep and len(cookie_value) <= MAX_KEPT_VALUE and len(session_value) <= MAX_KEPT_VALUE:
                if len(self._kept) >= self.MAX_KEPT:
                    self._kept.clear()
                self._kept[(cookie_value, session_value)] = token
        return token

    def valid(self, cookie_value: str | None, session_value: str | None, submitted: str | None) -> bool:
        if not cookie_value or not submitted:
            return False
        plain = unmasked(submitted)
        if plain is None:
            return False
        # A check that may fail keeps nothing: anyone can send made-up cookies of any size (a walk-through's 2,000
        # refused requests with 30 KB cookies kept 245 MB); the token rendered into the answer is kept.
        return hmac.compare_digest(self.form_token(cookie_value, session_value or "", keep=False), plain)


TOKEN_HEX = 64  # a form token: HMAC-SHA256 in hex
CSRF_MASKED = "csrf_masked"  # the request state's (token, masked token) of its answer
_HEX = re.compile(r"[0-9a-f]+")


def masked(token: str) -> str:
    """`token` as a page carries it: a fresh random pad, then the token XOR the pad, in hex (twice as long)."""
    pad = secrets.token_bytes(TOKEN_HEX // 2)
    hidden = int(token, 16) ^ int.from_bytes(pad)
    return pad.hex() + f"{hidden:0{TOKEN_HEX}x}"


def unmasked(submitted: str) -> str | None:
    """The token a submitted value stands for: a masked one unmasked, a bare one (a page rendered before tokens
    were masked) as it is; None for anything else."""
    if len(submitted) not in (TOKEN_HEX, 2 * TOKEN_HEX) or not _HEX.fullmatch(submitted):
        return None
    if len(submitted) == TOKEN_HEX:
        return submitted
    pad, hidden = submitted[:TOKEN_HEX], submitted[TOKEN_HEX:]
    return f"{int(pad, 16) ^ int(hidden, 16):0{TOKEN_HEX}x}"


def csrf_cookie_value(request: Request) -> str:
    """The request's CSRF cookie value, minting one (set on the response by the middleware) if absent."""
    state = request.scope.setdefault("state", {})
    value = state.get("csrf_cookie") or request.cookies.get(cookies(request).csrf)
    if not value or len(value) > 100:
        value = request.app.state.csrf.new_cookie_value()
        state["csrf_new"] = True
    state["csrf_cookie"] = value
    return value


def csrf_token(request: Request) -> str:
    """The token for the page being rendered, masked for this answer (`CsrfTokens`): bound to the session the
    browser will hold once it has this answer (the one sign-in or sign-out just set, or else the one it sent)."""
    return csrf_tokens(request)[1]


def csrf_tokens(request: Request) -> tuple[str, str]:
    """(the token, the token masked for this answer): one mask per answer, wherever the answer puts the token. The
    bare token is for what must stay the same from answer to answer, the ETag (app/responses.py)."""
    state = request.scope.setdefault("state", {})
    state["csrf_used"] = True  # the answer holds this person's token: no CDN may keep it (app/responses.py)
    session_value = state["csrf_session"] if "csrf_session" in state else session_cookie_value(request)
    token: str = request.app.state.csrf.form_token(csrf_cookie_value(request), session_value or "")
    pair: tuple[str, str] | None = state.get(CSRF_MASKED)
    if pair is None or pair[0] != token:  # none yet, or sign-in or sign-out changed the token since
        pair = state[CSRF_MASKED] = (token, masked(token))
    return pair


def rotate_csrf(request: Request, *, session_token: str = "") -> None:
    """A fresh token at sign-in (pass the new session's cookie value) and sign-out (nothing): pages
    rendered later in this request carry a token for the new session."""
    state = request.scope.setdefault("state", {})
    state["csrf_cookie"] = request.app.state.csrf.new_cookie_value()
    state["csrf_new"] = True
    state["csrf_session"] = session_token


class CsrfCookieMiddleware:
    """Sets the CSRF cookie when a page minted a new one."""

    def __init__(self, app: Any, *, cookies: Cookies) -> None:
        self.app = app
        self.name = cookies.csrf
        self.secure = cookies.secure

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                state = scope.get("state", {})
                if state.get("csrf_new"):
                    cookie = f"{self.name}={state['csrf_cookie']}; Path=/; HttpOnly; SameSite=Lax"
                    if self.secure:
                        cookie += "; Secure"
                    message["headers"] = [*message.get("headers", []), (b"set-cookie", cookie.encode())]
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _origin(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an absolute http(s) URL; None for anything else ("null" included)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    return parts.scheme, parts.hostname.lower(), port or (443 if parts.scheme == "https" else 80)


def expected_origin(request: Request) -> tuple[str, str, int] | None:
    """BASE_URL's origin; without BASE_URL (development only: production refuses to start), the address this
    request was sent to."""
    settings = request.app.state.settings
    if settings.base_url_given:
        return _origin(settings.base_url)
    host = request.headers.get("host", "")
    return _origin(f"{request.url.scheme}://{host}") if host else None


def reached_at(request: Request) -> str:
    """The address this request was sent to (scheme://host[:port]), as the browser named it."""
    return f"{request.url.scheme}://{request.headers.get('host', '')}"


def base_url_differs(request: Request) -> bool:
    """Whether this request reached the portal at another address than BASE_URL: links in emails and webhook
    payloads (always BASE_URL) would then lead elsewhere than where this person opened it."""
    return _origin(reached_at(request)) != _origin(request.app.state.settings.base_url)


def verify_origin(request: Request) -> None:
    """Unsafe requests sent by a browser from another site are refused, whatever cookies came with them.

    The Origin header (or, where a browser sends none, the Referer) must name BASE_URL's scheme, host and
    port. `Origin: null` (sandboxed frames, some redirects, file: pages) is refused. A request with neither
    header passes on to the token check alone: some privacy tools strip both.
    """
    if request.method not in UNSAFE_METHODS:
        return
    origin = request.headers.get("origin")
    sent = origin if origin is not None else request.headers.get("referer")
    if sent is None:
        return
    if _origin(sent) != expected_origin(request) or _origin(sent) is None:
        raise CrossOriginRefused()


async def verify_csrf(request: Request) -> None:
    """Dependency for every state-changing route of the portal (browser sessions, cookies): the request must
    come from the portal's own pages (verify_origin) and carry the token they hold, as the form field or
    X-CSRF-Token."""
    if request.method in ("GET", "HEAD", "OPTIONS"):
        return
    verify_origin(request)
    submitted = request.headers.get(CSRF_HEADER)
    if not submitted:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()
            value = form.get(CSRF_FIELD)
            submitted = value if isinstance(value, str) else None
    csrf_cookie = request.cookies.get(cookies(request).csrf)
    if not request.app.state.csrf.valid(csrf_cookie, session_cookie_value(request), submitted):
        raise CsrfFailed()
