"""How answers reach clients: HEAD wherever GET is; entity tags and 304s, Cache-Control and compression.

Plain ASGI middleware, outside everything else (app/main.py), so every route, the static files and the
error pages behave the same way.
"""

from __future__ import annotations

import gzip
import hashlib
from collections import OrderedDict
from collections.abc import MutableMapping
from typing import Any

import brotli  # type: ignore[import-untyped]  # ships no type information
from starlette.requests import cookie_parser

from app.security import CSRF_MASKED


class HeadMiddleware:
    """Answers HEAD as the GET of the same address would be answered, without the body.

    FastAPI's routes match HEAD only where a route says so, and uptime monitors and link checkers send
    HEAD: they got 405. Here a HEAD request runs as a GET inside (so routing, dependencies, caching and
    headers are the GET's) and only the body is dropped on the way out; Content-Length stays the one the
    GET would send, as RFC 9110 §9.3.2 allows. The server's own scope keeps saying HEAD (the access log).

    Not under `acting_prefixes`: GET routes that act rather than show (the sign-in callbacks spend a one-time token,
    open an account and a session). HEAD must be safe — link checkers, scanners and previews send it —, so there it
    reaches the router as HEAD, whose own HEAD routes answer 405 `Allow: GET` (404 where the GET would be: a provider
    the portal does not have) (a walk-through's HEAD of an SSO link signed the person in and spent the token their
    browser's GET then needed).
    """

    def __init__(self, app: Any, *, acting_prefixes: tuple[str, ...] = ()) -> None:
        self.app = app
        self.acting_prefixes = acting_prefixes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if (scope["type"] != "http" or scope["method"] == "GET"
                or (self.acting_prefixes and scope["path"].startswith(self.acting_prefixes))):
            await self.app(scope, receive, send)
            return
        if scope["method"] != "HEAD":
            # A 405 from a route that takes GET says so of HEAD too (`Allow: GET, HEAD`): it is answered.
            await self.app(scope, receive, _allowing_head(send))
            return

        async def without_body(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET", ASKED_HEAD: True}, receive, without_body)


# In the scope HeadMiddleware passes in: the request was a HEAD (the metrics count it as one)
ASKED_HEAD = "ahead.asked_head"


def _allowing_head(send: Any) -> Any:
    async def sending(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start" and message["status"] == 405:
            headers = message.get("headers", [])
            for i, (key, value) in enumerate(headers):
                methods = [m.strip() for m in value.split(b",")] if key.lower() == b"allow" else []
                if b"GET" in methods and b"HEAD" not in methods:
                    headers = [*headers[:i], (key, b", ".join([*methods, b"HEAD"])), *headers[i + 1:]]
                    message = {**message, "headers": headers}
                    break
        await send(message)

    return sending


# --- content codings -------------------------------------------------------------------------------------

# Kept once per page or file: a little more CPU once for a smaller answer every time after.
KEPT_LEVELS = {"br": 6, "gzip": 6}
# Compressed per answer (personal answers): cheaper settings, 0.5-0.8 ms for an 80 KB customer board here
# (brotli 3 is as fast as gzip 4 and about as small; brotli 4 took twice as long).
PER_ANSWER_LEVELS = {"br": 3, "gzip": 4}
PREFERRED = ("br", "gzip")  # brotli is about 5 % smaller than gzip on our pages, as fast at these levels


def compress(body: bytes, coding: str, level: int) -> bytes:
    """`body` in a content coding ("br" or "gzip"); gzip without a timestamp, so equal bodies give equal bytes."""
    if coding == "br":
        out: bytes = brotli.compress(body, quality=level)
        return out
    return gzip.compress(body, compresslevel=level, mtime=0)


def chosen_coding(accept_encoding: str | None) -> str | None:
    """The coding to answer in, from the request's Accept-Encoding: the one the client prefers (its q), brotli
    before gzip between equals, when the client takes it (q above 0); None for the body as it is."""
    if not accept_encoding:
        return None
    accepted: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        for param in params.split(";"):  # q may follow other parameters: "gzip;level=9;q=0"
            key, _, value = param.strip().partition("=")
            if key.strip() == "q":
                try:
                    q = float(value.strip())
                except ValueError:
                    q = 0.0
        accepted[name.strip()] = q
    # The client's preference first (the highest q), ours between equals: "br;q=0.5, gzip" is gzip.
    def weight(coding: str) -> float:
        return accepted.get(coding, accepted.get("*", 0.0))

    best = max(PREFERRED, key=lambda coding: (weight(coding), -PREFERRED.index(coding)))
    return best if weight(best) > 0 else None


def request_header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    """A list-valued request header (Accept-Encoding, If-None-Match) as one value: sent on several lines, its
    lines joined by commas, as RFC 9110 §5.3 reads them."""
    values = [value.decode("latin-1") for key, value in scope["headers"] if key == name]
    return ", ".join(values) if values else None


# --- validators ------------------------------------------------------------------------------------------


def weak_etag(*pieces: bytes | str) -> str:
    """A weak entity tag over the pieces of a body: the same for every content coding of it (RFC 9110 §8.8.3:
    a weak tag may stand for representations that differ only in their encoding)."""
    digest = hashlib.blake2b(digest_size=12)
    for piece in pieces:
        data = piece.encode() if isinstance(piece, str) else piece
        # Each piece's length first: ("ab", "c") and ("a", "bc") fill a page differently, so must not match.
        digest.update(len(data).to_bytes(8, "little"))
        digest.update(data)
    return f'W/"{digest.hexdigest()}"'


def none_match(if_none_match: str | None, etag: str) -> bool:
    """True when If-None-Match names `etag` (weak comparison, as RFC 9110 §13.1.2 asks) or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))


# --- entity tags, Cache-Control, compression: one middleware ----------------------------------------------

# Below this a response goes as it is: the coding's own overhead and the CPU are not worth it.
MIN_COMPRESS_BYTES = 1024
# Bytes of compressed bodies kept per process, by entity tag (the least recently used go first).
KEPT_ENCODED_BYTES = 16 * 1024 * 1024
TEXT_TYPES = (b"text/", b"application/json", b"application/atom+xml", b"application/xml",
              b"application/javascript", b"image/svg+xml")
# Never kept by a CDN, whoever asks: monitors must reach the process itself.
NOT_PUBLIC_PATHS = ("/healthz", "/readyz", "/metrics", "/api/v1/me")
_DROPPED_ON_304 = frozenset({b"content-length", b"content-type", b"content-encoding"})
# Set in the scope by whatever inside answered with the very bytes every visitor gets (a visitors' page kept finished,
# sent to a request whose session cookie names nobody: app/pagecache.py): personal by its request, so private, yet
# its compression is everyone's, kept by entity tag.
VISITORS_BYTES = "ahead.visitors_bytes"


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> bytes | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _add_vary(headers: list[tuple[bytes, bytes]], *names: bytes) -> None:
    present = [i for i, (key, _) in enumerate(headers) if key.lower() == b"vary"]
    values = [v.strip() for i in present for v in headers[i][1].split(b",") if v.strip()]
    lowered = {v.lower() for v in values}
    values += [n for n in names if n.lower() not in lowered]
    for i in reversed(present):
        del headers[i]
    headers.append((b"vary", b", ".join(values)))


def _unmasked_body(inner: dict[str, Any], body: bytes) -> bytes:
    """The body as the ETag sees it: with the bare CSRF token where this answer put its mask of it
    (app/security.py `csrf_tokens`), so that the tag changes when the page does, not with each answer's mask."""
    pair: tuple[str, str] | None = inner.get("state", {}).get(CSRF_MASKED)
    return body if pair is None else body.replace(pair[1].encode(), pair[0].encode())


class ResponseMiddleware:
    """Entity tags and 304s, Cache-Control and compression for the portal's GET answers.

    * **ETag** (weak, `W/"…"`, one tag for every coding of the same bytes): a kept page brings its own, made
      once per page and variant (app/pagecache.py); any other text answer of 200 (feeds, the API, pages not
      kept) gets one hashed from its body. An `If-None-Match` naming it is answered 304 without a body. The
      tag is made from every byte of the answer, the person's own parts included, so nobody gets a 304 for
      bytes that are not theirs; the CSRF token counts as itself, not as this answer's mask of it (a copy with
      another mask is as good).
    * **Cache-Control**, where the route set none: `public, max-age=0, s-maxage=N` (PUBLIC_CACHE_SECONDS) for
      an answer shared by every visitor — no session cookie, no credentials, no cookie set, no CSRF token in
      it — so a CDN may keep it N seconds while browsers still ask (a visitor who signs in sees their own page
      at once); `Vary: Cookie` with it, for caches that key on cookies. Anything personal gets
      `private, no-cache`; a visitor's answer without the setting `no-cache` (revalidated by its ETag). Only
      answers of 200 may be public: an error page or a redirect gets `private, no-cache` when personal (it may
      hold the person's name and token, or name an item only they may see), else `no-cache` (a 404 or a slug's
      301 for a visitor may be a customer's page).
    * **Compression**: text above MIN_COMPRESS_BYTES in brotli or gzip as the client accepts, with
      `Vary: Accept-Encoding`. An answer the same for everyone who gets it (nothing personal, see above, or
      the visitors' very bytes sent to a request naming a session that names nobody: `VISITORS_BYTES`) is
      compressed once per entity tag and kept; a personal one is compressed per answer at cheaper settings.
      An answer that arrives compressed (static files) or streamed (CSV exports) is left as it is.

    It sits outside the app's other middleware (only HEAD is further out), and must stay outside any that
    keeps finished answers for reuse: what goes out of here depends on the request's Accept-Encoding.
    """

    def __init__(self, app: Any, *, public_seconds: int = 0, session_cookie: str = "",
                 kept_bytes: int = KEPT_ENCODED_BYTES) -> None:
        self.app = app
        self.public_seconds = public_seconds
        self.session_cookie = session_cookie.encode()
        self.kept_bytes = kept_bytes
        self._kept: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self._kept_size = 0
        self.compressed = self.reused = 0  # per-answer compressions made, and kept ones reused

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "GET":
            await self.app(scope, receive, send)
            return
        start: dict[str, Any] | None = None
        passing = False
        # If-None-Match is answered here, so the app inside sees an ordinary GET (and a kept finished page may
        # answer it without the stack, app/pagecache.py); `inner` also carries the request's state back out.
        inner = {**scope, "headers": [h for h in scope["headers"] if h[0] != b"if-none-match"]}

        async def shaping(message: dict[str, Any]) -> None:
            nonlocal start, passing
            if passing:
                await send(message)
            elif message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body" and start is not None:
                if message.get("more_body", False):  # streamed: as it is
                    passing = True
                    await send(start)
                    await send(message)
                    return
                await self._finish(scope, inner, start, message.get("body", b""), send)
            else:
                await send(message)

        await self.app(inner, receive, shaping)

    def _personal(self, scope: dict[str, Any], inner: dict[str, Any], headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether the answer may differ from the one another visitor gets for the same address: a session cookie
        or credentials sent, a cookie set, a CSRF token in it, or anyone the app signed in for it. The cookie is
        read as the app reads it (`ahead_session =…` with a space or a tab still names it: a walk-through's API list
        for staff went out public), and whoever the app took the request for counts whatever the header said."""
        for key, value in scope["headers"]:
            if key == b"authorization" or (key == b"cookie" and self.session_cookie and self._names_session(value)):
                return True
        if _header(headers, b"set-cookie") is not None:
            return True
        state = inner.get("state", {})
        viewer = state.get("viewer")
        return bool(state.get("csrf_used")) or getattr(viewer, "user", None) is not None

    def _names_session(self, cookie: bytes) -> bool:
        if self.session_cookie not in cookie:
            return False
        if self.session_cookie + b"=" in cookie:
            return True
        return self.session_cookie.decode("latin-1") in cookie_parser(cookie.decode("latin-1"))

    async def _finish(self, scope: dict[str, Any], inner: dict[str, Any], start: dict[str, Any], body: bytes,
                      send: Any) -> None:
        status: int = start["status"]
        headers: list[tuple[bytes, bytes]] = list(start.get("headers", []))
        content_type = _header(headers, b"content-type") or b""
        text = content_type.startswith(TEXT_TYPES)
        personal = self._personal(scope, inner, headers)
        etag_value = _header(headers, b"etag")
        etag = etag_value.decode("latin-1") if etag_value is not None else None
        cache_control = _header(headers, b"cache-control")
        if (status == 200 and etag is None and text and body
                and (cache_control is None or b"no-store" not in cache_control)):
            etag = weak_etag(_unmasked_body(inner, body))
            headers.append((b"etag", etag.encode()))
        if cache_control is None:
            if status == 200:
                headers.append((b"cache-control", self._cache_control(scope, personal, text)))
            else:  # an error page or a redirect: never kept by a shared cache, nor reused unasked by a browser
                headers.append((b"cache-control", b"private, no-cache" if personal else b"no-cache"))
            if not personal and self.public_seconds and text:
                # A cookie or a token (Authorization: Bearer) makes another answer: a CDN keeps them apart
                _add_vary(headers, b"Cookie", b"Authorization")
        encodable = (text and len(body) >= MIN_COMPRESS_BYTES and status not in (204, 304)
                     and _header(headers, b"content-encoding") is None)
        if encodable:
            _add_vary(headers, b"Accept-Encoding")
        # Not when the answer sets a cookie: a 304 would keep the client's copy and replace what it was made with (a
        # new CSRF cookie under the old form's token, from `If-None-Match: *`).
        if (status == 200 and etag is not None and none_match(request_header(scope, b"if-none-match"), etag)
                and _header(headers, b"set-cookie") is None):
            await send({**start, "status": 304, "headers": [h for h in headers if h[0].lower() not in _DROPPED_ON_304]})
            await send({"type": "http.response.body", "body": b""})
            return
        coding = chosen_coding(request_header(scope, b"accept-encoding")) if encodable else None
        if coding is not None:
            shared = not personal or inner.get(VISITORS_BYTES, False)
            body = self._encoded(body, coding, etag if (status == 200 and shared) else None)
            headers = [h for h in headers if h[0].lower() != b"content-length"]
            headers += [(b"content-encoding", coding.encode()), (b"content-length", str(len(body)).encode())]
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _cache_control(self, scope: dict[str, Any], personal: bool, text: bool) -> bytes:
        if personal:
            return b"private, no-cache"
        if self.public_seconds and text and not scope["path"].startswith(NOT_PUBLIC_PATHS):
            return f"public, max-age=0, s-maxage={self.public_seconds}".encode()
        return b"no-cache"

    def _encoded(self, body: bytes, coding: str, etag: str | None) -> bytes:
        """`body` in `coding`: kept by entity tag when the answer is everyone's, else made for this answer."""
        if etag is None:
            self.compressed += 1
            return compress(body, coding, PER_ANSWER_LEVELS[coding])
        key = (etag, coding)
        kept = self._kept.get(key)
        if kept is not None:
            self._kept.move_to_end(key)
            self.reused += 1
            return kept
        self.compressed += 1
        kept = compress(body, coding, KEPT_LEVELS[coding])
        if len(kept) <= self.kept_bytes:
            self._kept[key] = kept
            self._kept_size += len(kept)
            while self._kept_size > self.kept_bytes:
                _, dropped = self._kept.popitem(last=False)
                self._kept_size -= len(dropped)
        return kept
