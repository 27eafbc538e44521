"""Page rendering: the one Jinja environment, flash messages, redirects after POST."""

from __future__ import annotations

import json
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from itsdangerous import BadSignature, URLSafeSerializer
from markupsafe import Markup

from app import assets
from app.config import ROOT
from app.markup import plain_text, render_markdown
from app.portal import service as portal
from app.security import clear_flash_cookie, cookies, csrf_token, set_flash_cookie

templates = Jinja2Templates(directory=str(ROOT / "templates"))
templates.env.autoescape = True
templates.env.trim_blocks = True
templates.env.lstrip_blocks = True
# Re-reading templates from disk is for development (app.main turns it on there): in production every
# {% include %} would otherwise stat its file, fifty times per board.
templates.env.auto_reload = False


# The moment a page says "3 minutes ago" from. A kept page (app/pagecache.py) is rendered as of the start of the
# minute it is kept for, so that every worker and instance rendering it in that minute sends the same bytes, and
# the same ETag: a client revalidating with one worker's tag gets its 304 from any other.
rendered_at: ContextVar[datetime | None] = ContextVar("rendered_at", default=None)


def _now() -> datetime:
    return datetime.now(UTC)


def _ago(value: datetime | None) -> str:
    if value is None:
        return ""
    seconds = ((rendered_at.get() or _now()) - value).total_seconds()
    if seconds < 60:
        return "just now"
    for unit, size in (("year", 31536000), ("month", 2592000), ("week", 604800), ("day", 86400),
                       ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n != 1 else ''} ago"
    return "just now"


def _date(value: datetime | None, fmt: str = "%-d %B %Y") -> str:
    return value.strftime(fmt) if value else ""


def _iso(value: datetime | None) -> str:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else ""


def _query(request: Request, **changes: Any) -> str:
    """The current query string with some parameters changed (None removes one). The first page is the address
    without `page` (its one address: `?page=1` is answered as it, but not from the kept pages before the stack)."""
    params = dict(request.query_params.items())
    for key, value in changes.items():
        if value is None or value == "" or (key == "page" and value == 1):
            params.pop(key, None)
        else:
            params[key] = str(value)
    if "page" not in changes:
        params.pop("page", None)
    return "?" + urlencode(params) if params else request.url.path


def _paged(request: Request, params: Mapping[str, str], page: int) -> str:
    """Another page of the list at this path, carrying only `params` besides (what the page understood of its query:
    a value it refused is not passed on from page to page)."""
    carried = {**params, "page": str(page)} if page > 1 else dict(params)
    return request.url.path + ("?" + urlencode(carried) if carried else "")


templates.env.filters["markdown"] = render_markdown
templates.env.filters["ago"] = _ago
templates.env.filters["date"] = _date
templates.env.filters["iso"] = _iso
templates.env.filters["plain"] = plain_text
templates.env.globals["query"] = _query
templates.env.globals["paged"] = _paged
# Static files by their content-hashed names (app/assets.py): kept a year by browsers and CDNs.
templates.env.globals["static_url"] = assets.static.url


def _signer(request: Request) -> URLSafeSerializer:
    return URLSafeSerializer(request.app.state.settings.secret_key, salt="flash")


class LazyCsrfToken:
    """The request's CSRF token, computed (and its cookie minted) only where a page writes it: a visitor's page
    without a form costs no token and sets no cookie."""

    __slots__ = ("_request", "_value")

    def __init__(self, request: Request) -> None:
        self._request = request
        self._value: str | None = None

    def __str__(self) -> str:
        if self._value is None:
            self._value = csrf_token(self._request)
        return self._value

    def __html__(self) -> str:
        return str(self)


def render(request: Request, template: str, context: dict[str, Any] | None = None, *, status_code: int = 200,
           headers: dict[str, str] | None = None) -> HTMLResponse:
    ctx = page_context(request, context, csrf=LazyCsrfToken(request), flashes=read_flashes(request))
    response = templates.TemplateResponse(request, template, ctx, status_code=status_code, headers=headers)
    if ctx["flashes"] or flash_cookie_sent(request):
        clear_flash_cookie(request, response)
    return response


def flash_cookie_sent(request: Request) -> bool:
    """Whether the request carries a flash cookie, shown or not: one that does not verify (forged, from an older
    key) is cleared as a shown one is, or it would send every later page past the kept pages (app/pagecache.py)."""
    return cookies(request).flash in request.cookies


def page_context(request: Request, context: dict[str, Any] | None, *, csrf: str | LazyCsrfToken,
                 flashes: list[dict[str, str]]) -> dict[str, Any]:
    """What every page's layout reads besides the page's own context (app/pagecache.py passes stand-ins
    for the per-request CSRF token and flashes)."""
    ctx: dict[str, Any] = dict(context or {})
    ctx.setdefault("viewer", getattr(request.state, "viewer", None))
    db = request.scope.get("state", {}).get("db")
    ctx["branding"] = portal.get_branding(db.session) if db is not None else portal.Branding()
    ctx["csrf_token"] = csrf
    # Absolute addresses in link previews (Open Graph, Twitter cards) and feeds: the configured public one.
    ctx["base_url"] = request.app.state.settings.base_url
    ctx["flashes"] = flashes
    ctx.setdefault("errors", {})
    ctx.setdefault("form", {})
    return ctx


def read_flashes(request: Request) -> list[dict[str, str]]:
    raw = request.cookies.get(cookies(request).flash)
    if not raw:
        return []
    try:
        data = _signer(request).loads(raw)
    except BadSignature:
        return []
    return [m for m in data if isinstance(m, dict)][:5] if isinstance(data, list) else []


def redirect(request: Request, url: str, *, flash: str | None = None, kind: str = "success") -> RedirectResponse:
    """303 after a POST, with an optional message shown on the next page."""
    response = RedirectResponse(url, status_code=303)
    if flash:
        value = _signer(request).dumps([{"kind": kind, "text": flash}])
        set_flash_cookie(request, response, value)
    return response


def json_script(value: Any) -> Markup:
    """JSON safe to embed in a <script type="application/json"> element."""
    text = json.dumps(value).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Markup(text)  # nosec B704 # json.dumps output with <, > and & escaped


templates.env.filters["json_script"] = json_script
