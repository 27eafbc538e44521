"""How answers reach clients: HEAD wherever GET is, content codings, entity tags.

Plain ASGI middleware, outside everything else (app/main.py), so every route, the static files and the
error pages behave the same way.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import MutableMapping
from typing import Any

import brotli  # type: ignore[import-untyped]  # ships no type information


class HeadMiddleware:
    """Answers HEAD as the GET of the same address would be answered, without the body.

    FastAPI's routes match HEAD only where a route says so, and uptime monitors and link checkers send
    HEAD: they got 405. Here a HEAD request runs as a GET inside (so routing, dependencies, caching and
    headers are the GET's) and only the body is dropped on the way out; Content-Length stays the one the
    GET would send, as RFC 9110 §9.3.2 allows. The server's own scope keeps saying HEAD (the access log).
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def without_body(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.body":
                if message.get("more_body", False):
                    return
                message = {"type": "http.response.body", "body": b"", "more_body": False}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, without_body)


# --- content codings -------------------------------------------------------------------------------------

# Kept once per page or file: a little more CPU once for a smaller answer every time after.
KEPT_LEVELS = {"br": 6, "gzip": 6}
# Compressed per answer (middleware): cheaper settings, about 1 ms for a 50 KB page on this machine kind.
PER_ANSWER_LEVELS = {"br": 4, "gzip": 4}
PREFERRED = ("br", "gzip")  # brotli is about 5 % smaller than gzip on our pages, as fast at these levels


def compress(body: bytes, coding: str, level: int) -> bytes:
    """`body` in a content coding ("br" or "gzip"); gzip without a timestamp, so equal bodies give equal bytes."""
    if coding == "br":
        out: bytes = brotli.compress(body, quality=level)
        return out
    return gzip.compress(body, compresslevel=level, mtime=0)


def chosen_coding(accept_encoding: str | None) -> str | None:
    """The coding to answer in, from the request's Accept-Encoding: brotli, then gzip, when the client takes
    it (q above 0); None for the body as it is."""
    if not accept_encoding:
        return None
    accepted: dict[str, float] = {}
    for item in accept_encoding.lower().split(","):
        name, _, params = item.strip().partition(";")
        q = 1.0
        params = params.strip()
        if params.startswith("q="):
            try:
                q = float(params[2:])
            except ValueError:
                q = 0.0
        accepted[name.strip()] = q
    for coding in PREFERRED:
        if accepted.get(coding, accepted.get("*", 0.0)) > 0:
            return coding
    return None


def request_header(scope: MutableMapping[str, Any], name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


# --- validators ------------------------------------------------------------------------------------------


def weak_etag(*pieces: bytes | str) -> str:
    """A weak entity tag over the pieces of a body: the same for every content coding of it (RFC 9110 §8.8.3:
    a weak tag may stand for representations that differ only in their encoding)."""
    digest = hashlib.blake2b(digest_size=12)
    for piece in pieces:
        digest.update(piece.encode() if isinstance(piece, str) else piece)
    return f'W/"{digest.hexdigest()}"'


def none_match(if_none_match: str | None, etag: str) -> bool:
    """True when If-None-Match names `etag` (weak comparison, as RFC 9110 §13.1.2 asks) or is `*`."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag.strip().removeprefix("W/") == opaque for tag in if_none_match.split(","))
