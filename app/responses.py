"""How answers reach clients: HEAD wherever GET is.

Plain ASGI middleware, outside everything else (app/main.py), so every route, the static files and the
error pages behave the same way.
"""

from __future__ import annotations

from typing import Any


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
