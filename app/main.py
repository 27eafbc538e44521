"""create_app(): middleware, routers, static files, error pages."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from sqlalchemy.exc import OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app import assets, handlers, health, logs, metrics, revision
from app.accounts import magic, me, oidc, sso
from app.accounts import views as accounts_views
from app.admin.router import router as admin_router
from app.api import desk as api_desk
from app.api import tech as api_tech
from app.api import v1
from app.changelog import views as changelog_views
from app.config import Settings, get_settings
from app.db import Database, DbSessionMiddleware, OffLoopMiddleware, database_busy, lost_before_any_statement
from app.deps import SignedIn, SignedInViewers, enforce_private_mode
from app.discussion import views as discussion_views
from app.errors import AppError, FormInvalid, NotAuthenticated
from app.feedback import views as feedback_views
from app.forms import plain_message
from app.inputs import CleanInputMiddleware, refuse_bad_json, refuse_bad_path
from app.notify import views as notify_views
from app.outbox.worker import Worker, wake_on_commit
from app.pagecache import KeptPagesMiddleware, PageCache
from app.perimeter import BodyLimitMiddleware, TrustedProxyMiddleware
from app.portal import views as portal_views
from app.ratelimit import RateLimiter
from app.responses import HeadMiddleware, ResponseMiddleware
from app.roadmap import feeds
from app.roadmap import views as roadmap_views
from app.security import (
    Cookies,
    CsrfCookieMiddleware,
    CsrfTokens,
    IsolatedStateMiddleware,
    SecurityHeadersMiddleware,
)
from app.tech import views as tech_views
from app.voting import service as voting_service
from app.voting import views as voting_views
from app.voting import widget as vote_widget
from app.web import redirect, render, templates

log = logging.getLogger("ahead")

# POST routes that take a file (the branding logo): their bodies may reach MAX_UPLOAD_BYTES, others
# MAX_BODY_BYTES.
UPLOAD_PATHS = ("/admin/settings",)

# GET routes that act instead of showing: the sign-in flows (OIDC's start and callback, the host app's SSO link) spend
# one-time tokens, open accounts and sessions. Their transaction writes from the start; a HEAD of them is refused.
SIGN_IN_GETS = ("/auth/", "/sso/")

# GET routes whose slow part runs in a thread, each waiting for a slot of the pool first (app/db.py OffLoopMiddleware).
OFF_LOOP_PATHS = frozenset({"/search", "/ideas/similar", "/api/v1/items", "/changelog", "/changelog.atom",
                            "/sitemap.xml"})
OFF_LOOP_PREFIXES = ("/api/v1/items/", "/changelog/", "/items/")

# Seconds a stopping web process gives its outbox worker to finish the message in hand.
OUTBOX_STOP_SECONDS = 20.0


_JSON_ONLY = ("/api/", "/hooks/")


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith(_JSON_ONLY) or "application/json" in request.headers.get("accept", "").split(",")[0]


def _error_response(request: Request, status: int, title: str, detail: str, code: str,
                    headers: dict[str, str] | None = None, extra: dict[str, Any] | None = None) -> Response:
    if not request.url.path.startswith(_JSON_ONLY):  # a page or JSON by the Accept header: a cache keeps them apart
        headers = {**(headers or {}), "Vary": "Accept"}
    if _wants_json(request):
        return JSONResponse({"error": code, "detail": detail, **(extra or {})}, status_code=status, headers=headers)
    return render(request, "errors/error.html", {"status": status, "title": title, "detail": detail,
                                                   "code": code}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, exc: AppError) -> Response:
        if isinstance(exc, NotAuthenticated) and not _wants_json(request):
            from urllib.parse import quote

            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            response = redirect(request, f"/login?next={quote(target)}", flash=exc.detail, kind="info")
            response.headers["Vary"] = "Accept"  # a JSON client gets the 401 instead
            return response
        extra = {"fields": exc.errors} if isinstance(exc, FormInvalid) else None
        return _error_response(request, exc.status_code, exc.title, exc.detail, exc.code, exc.headers, extra)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            if (moved := _without_trailing_slash(request)) is not None:
                return RedirectResponse(moved, status_code=308)
            return _error_response(request, 404, "Page not found", "There is nothing at this address.", "not_found")
        titles = {405: "Method not allowed", 413: "Too large"}
        codes = {413: "too_large"}  # the body cap (app/perimeter.py), as when it answers without the app
        return _error_response(request, exc.status_code, titles.get(exc.status_code, "Error"),
                               str(exc.detail), codes.get(exc.status_code, "http_error"), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> Response:
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            # A body that is not JSON at all: 400, as the API's description says (its fields would be positions).
            return _error_response(request, 400, "Bad request", "The body is not valid JSON.", "bad_json")
        fields = {".".join(str(p) for p in e["loc"][1:]) or str(e["loc"][0]): plain_message(e) for e in exc.errors()}
        detail = "; ".join(f"{k}: {v}" for k, v in fields.items())
        return _error_response(request, 422, "Please check the request", detail, "invalid", extra={"fields": fields})

    @app.exception_handler(Exception)
    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        _without_database(request)
        return _error_response(request, 500, "Something went wrong",
                               "Something broke on our side. Nothing you sent was changed; please try again.",
                               "server_error")

    @app.exception_handler(OperationalError)
    async def database_error(request: Request, exc: OperationalError) -> Response:
        holder = request.scope.get("state", {}).get("db")
        if holder is not None and lost_before_any_statement(exc):
            # DbSessionMiddleware runs the request again on a fresh connection instead of sending this.
            holder.connection_lost = True
            log.warning("%s %s: %s", request.method, request.url.path, str(exc.orig).strip())
            _without_database(request)
            return _error_response(request, 500, "Something went wrong",
                                   "Something broke on our side. Nothing you sent was changed; please try again.",
                                   "server_error")
        busy = database_busy(exc)
        if busy is None:
            return await server_error(request, exc)
        if busy.waited_for_lock and holder is not None:
            # DbSessionMiddleware may run the request again instead of sending this; it logs the 503 it sends.
            holder.lock_refused = True
        else:
            log.warning("503 on %s %s: %s", request.method, request.url.path, str(exc.orig).strip())
        _without_database(request)  # the transaction is aborted; the middleware rolls it back
        return _error_response(request, busy.status_code, busy.title, busy.detail, busy.code, busy.headers)


def _without_database(request: Request) -> None:
    """Render the error page without the database (no signed-in user, default branding): the request's
    transaction is rolled back or unusable, and the objects it loaded with it."""
    state = request.scope.setdefault("state", {})
    state["db"] = None
    state["viewer"] = None


def create_app(settings: Settings | None = None, database: Database | None = None) -> FastAPI:
    settings = settings or get_settings()
    logs.configure()
    owns_database = database is None
    database = database or Database(settings.database_url, pool_size=settings.db_pool_size,
                                    lock_timeout=settings.db_lock_timeout,
                                    statement_timeout=settings.db_statement_timeout or None,
                                    lock_wait_slice=settings.db_lock_wait_slice)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        # What start-up made (modules, templates, mappers) lives as long as the process: out of the
        # collector's sight, a full collection under load no longer walks it (fewer long pauses).
        gc.collect()
        gc.freeze()
        stop = asyncio.Event()
        worker = None
        if settings.outbox_worker:
            # The delivery worker of this process (app/outbox/worker.py); woken at once by a commit here.
            worker = asyncio.create_task(Worker(database, settings).run_forever(stop), name="outbox-worker")
        try:
            yield
        finally:
            if worker is not None:
                stop.set()  # the message in hand is finished, the rest of its batch handed back
                # Past the wait it is cancelled; the jobs it claimed go to another worker when their lease ends.
                with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                    await asyncio.wait_for(worker, timeout=OUTBOX_STOP_SECONDS)
            # Pages being made again for their new minute (app.pagecache `_refresh`) finish before the database goes
            await app.state.pages.drain()
            if isinstance(watched, revision.SqliteWatcher):
                watched.close()
            elif isinstance(watched, revision.PostgresWatcher):
                await watched.drain()
                await watched.close()
            if owns_database:
                database.dispose()

    app = FastAPI(
        # Starlette's own redirect of "/changelog/" to "/changelog" is built from the request's Host header, for
        # POSTs too (307, body and CSRF token sent again): ours is relative, for GET and HEAD (http_error).
        redirect_slashes=False,
        # FastAPI's own OpenTelemetry bridge asked the global tracer, meter and logger providers on every request
        # whether anyone had configured them (environment lookups, about 2 % of a vote's CPU); Ahead's own
        # Prometheus /metrics is what it offers operators (docs/deploy.md)
        telemetry={"tracing": False, "metrics": False, "logs": False},
        title="Ahead",
        version="1",
        summary="Read the product roadmap: items, stages, timeframes and release notes.",
        description=(
            "Visitors and signed-in people read what they may see; votes need the portal's session and CSRF "
            "token. Staff scripts send a staff API token (`Authorization: Bearer ahead_…`, the `StaffToken` "
            "scheme; created under Admin › API tokens, shown once) to read the prioritisation desk, an item's "
            "demand and the technology roadmap (initiatives, backlog links, delivery progress), and with a "
            "read-write token to set an item's RICE estimate and to create, change and delete initiatives and "
            "backlog links. With a token the item endpoints "
            "answer as staff see them (drafts and internal items included); a token that is unknown, revoked, "
            "expired or whose owner is no longer staff gets 401. Tokens in cookies or query strings are ignored."
        ),
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads its assets from a CDN; /openapi.json is the description
        redoc_url=None,
        openapi_url="/openapi.json",
        dependencies=[Depends(refuse_bad_path), Depends(enforce_private_mode), Depends(refuse_bad_json)],
    )
    app.state.settings = settings
    app.state.database = database
    revision.track(database)
    if settings.metrics_enabled:
        metrics.watch_pool(database.engine)
        metrics.forget_dead_processes()  # the gauges of a worker uvicorn replaced
    # How the kept-pages layer reads the revisions before a request's session: data_version on SQLite, a single-flight
    # read per worker on PostgreSQL. A database put in app.state later (a test's) is read with a session of its own.
    app.state.revision_reader = watched = revision.reader_for(database)

    def revision_reader(current: Database) -> revision.Revisions | Awaitable[revision.Watched]:
        return watched(current) if current is database else revision.peek(current)

    # Who a session cookie stands for, kept per worker: until a commit on SQLite, until the content or sessions
    # revision moves on PostgreSQL (awaited: the worker's shared read), read per request on another database.
    signed_in_viewers = SignedInViewers()

    def signed_in_reader(current: Database, token: str) -> SignedIn | Awaitable[SignedIn]:
        if current is database and isinstance(watched, revision.PostgresWatcher):
            return signed_in_viewers.read_after(watched, current, token)
        if current is database and isinstance(watched, revision.SqliteWatcher):
            return signed_in_viewers(current, token, watcher=watched)
        return signed_in_viewers(current, token)
    # Who a session cookie stands for on the vote's route, kept under the revisions its transaction reads.
    app.state.vote_viewers = SignedInViewers()
    wake_on_commit(database)  # a request that enqueued mail wakes this process's worker at once
    handlers.load()  # every domain's outbox handlers, for the worker below and `ahead worker`
    app.state.csrf = CsrfTokens(settings.secret_key)
    app.state.cookies = cookies = Cookies.for_settings(settings)
    app.state.limiter = RateLimiter(settings.redis_url, retry_seconds=settings.redis_retry_seconds,
                                    key_secret=settings.secret_key)
    app.state.pages = PageCache()
    widgets = vote_widget.register(app.state.pages)  # the cards' vote widgets in kept pages
    if isinstance(watched, revision.PostgresWatcher):  # a vote's new counts come with the worker's revision read
        watched.follow_counts(widgets.followed, widgets.seen, voting_service.counts_sql)
    roadmap_views.keep_search_pages(app.state.pages)  # search pages, bounded apart from the boards
    templates.env.auto_reload = not settings.is_production

    _install_error_handlers(app)

    sso.load_keys(settings)  # an unusable SSO_JWT_SECRET / SSO_JWT_PUBLIC_KEY stops start-up with its reason
    sso.install_access_log_redaction()  # host-app SSO tokens and magic links travel in URLs

    # The vote, the withdrawal and the search page first, as plain routes that call the app's dependencies themselves.
    app.router.routes[:0] = [*voting_views.direct_routes(), *roadmap_views.direct_routes()]
    app.include_router(health.router)
    app.include_router(roadmap_views.router)
    app.include_router(discussion_views.router)
    app.include_router(voting_views.router)
    app.include_router(feeds.router)
    app.include_router(changelog_views.router)
    app.include_router(portal_views.router)
    app.include_router(accounts_views.router)
    app.include_router(oidc.router)
    app.include_router(magic.router)
    app.include_router(sso.router)
    app.include_router(me.router)
    app.include_router(feedback_views.router)
    app.include_router(notify_views.router)
    app.include_router(notify_views.me_router)
    app.include_router(admin_router)
    app.include_router(v1.router)
    app.include_router(api_desk.router)
    app.include_router(api_tech.router)
    app.include_router(tech_views.router)  # signed tracker webhooks: no CSRF (see app/tech/views.py)
    assets.static.watch = not settings.is_production  # development: an edited file gets its new name at once
    app.mount("/static", assets.static, name="static")  # content-hashed names (app/assets.py)
    metrics.named_routes(app.router.routes)  # FastAPI's /openapi.json counted under its own name, not "<unrouted>"

    # Outermost last: HEAD answered as GET without the body, ETags, Cache-Control and compression, the client's
    # address (trusted proxies only), the body cap, a state of its own per request, headers on everything, the
    # CSRF cookie, clean input, then the request's transaction.
    app.add_middleware(metrics.RouteMiddleware)  # innermost: the route the router matched, for the metrics
    app.add_middleware(DbSessionMiddleware, database_getter=lambda: app.state.database,
                       write_get_prefixes=SIGN_IN_GETS)
    # A search waits for one of the pool's off-loop slots, holding nothing, and searches in a thread (app/db.py).
    app.add_middleware(OffLoopMiddleware, database_getter=lambda: app.state.database, paths=OFF_LOOP_PATHS,
                       prefixes=OFF_LOOP_PREFIXES)
    # Query strings and form bodies lose the characters PostgreSQL refuses before any route reads them.
    app.add_middleware(CleanInputMiddleware)
    # Authlib keeps the OIDC state, nonce and PKCE verifier here between /auth/{name}/start and the
    # callback: a signed cookie of its own, gone after 10 minutes; sent only to /auth/ over http, and over
    # https to every path, which the __Host- prefix requires.
    app.add_middleware(oidc.OidcStateMiddleware, prefix="/auth/", secret_key=settings.secret_key,
                       session_cookie=cookies.oidc, max_age=600, path=cookies.oidc_path, https_only=cookies.secure)
    app.add_middleware(CsrfCookieMiddleware, cookies=cookies)
    app.add_middleware(SecurityHeadersMiddleware)
    app.add_middleware(IsolatedStateMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body=settings.max_body_bytes, max_upload=settings.max_upload_bytes,
                       upload_paths=UPLOAD_PATHS)
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.proxy_networks)
    # A visitor's page kept finished (no session, no flash message) is answered here, before all of the above
    # (app/pagecache.py).
    # So is a signed-in customer's page kept for their audience, filled in with their own parts.
    app.add_middleware(KeptPagesMiddleware, cache_getter=lambda: app.state.pages,
                       database_getter=lambda: app.state.database, revision_reader=revision_reader,
                       signed_in_reader=signed_in_reader, session_cookie=cookies.session, csrf_cookie=cookies.csrf,
                       flash_cookie=cookies.flash)
    # Entity tags and 304s, Cache-Control, compression (app/responses.py): outside anything that keeps finished
    # answers for reuse, since what goes out depends on the request's Accept-Encoding.
    app.add_middleware(ResponseMiddleware, public_seconds=settings.public_cache_seconds, session_cookie=cookies.session)
    # Counts and times every answer, and serves /metrics to whom may read it (before the proxy's headers are believed:
    # it needs the address that connected), pages kept finished and 304s included. Inside HEAD's: a HEAD counts as the GET it runs.
    app.add_middleware(metrics.MetricsMiddleware, enabled=settings.metrics_enabled, token=settings.metrics_token,
                       allowed=settings.metrics_networks, page_cache=lambda: getattr(app.state, "pages", None),
                       extra=lambda: (health.OutboxDepth(app.state.database),))
    # Outermost: inside, a HEAD is the GET it stands for, except where a GET acts (signs in): there a 405.
    app.add_middleware(HeadMiddleware, acting_prefixes=SIGN_IN_GETS)
    return app


def _without_trailing_slash(request: Request) -> str | None:
    """For a GET or HEAD of "/changelog/" that has no page, "/changelog" (with its query) if that has one: a
    relative address, never one made from the Host header. None otherwise (a POST is not sent elsewhere)."""
    path = request.url.path
    if request.method not in ("GET", "HEAD") or not path.endswith("/") or path == "/":
        return None
    stripped = "/" + path.strip("/")  # one leading slash: "//host" would be another site's address
    scope = {**request.scope, "path": stripped}
    if not any(route.matches(scope)[0] == Match.FULL for route in request.app.router.routes):
        return None
    return stripped + (f"?{request.url.query}" if request.url.query else "")
