"""Prometheus metrics: what the operator's dashboards read at /metrics, and who may read them.

What is counted, and nothing about anyone: requests by **route template** (``/items/{public_id}``, never the
address asked for), method and status; their duration as a histogram; the page cache's hits and misses; the
database pool (its size and the connections in use); and, read from the database at each scrape, the outbox's
depth (waiting, due, failed, given up) and how late its oldest due job is. Every label takes a value from a
short fixed set (the app's routes, eight methods, the statuses the app sends), so no request can make the
metrics grow: a scanner asking for a million made-up addresses adds one series, ``route="<unrouted>"``.

**Several worker processes** (``ahead serve --workers N``): a scrape reaches one worker, which alone knows only
its own counts, and the next scrape another, so counters would jump back and forth. prometheus_client's
multiprocess mode is used instead: every worker writes its values to memory-mapped files in one directory and
the worker that answers a scrape adds them all up. Its traps, and what is done about each:

* the directory must be set before the workers start and be empty at start: ``ahead serve`` makes a fresh one
  for each run (or empties PROMETHEUS_MULTIPROC_DIR's metric files when the operator names one) and sets it in
  the environment the workers inherit;
* a worker that dies leaves its files behind. Its counters and histograms must stay (they were counted; a
  counter going down would read as a reset), and do; its gauges would linger, so gauges are "live" ones and
  each worker removes, when it starts, those of processes no longer running (uvicorn restarts a dead worker,
  but has no hook like gunicorn's ``child_exit``);
* custom collectors and ``set_function`` gauges do not work across processes: the outbox's depth is the same
  for every worker, so it is read from the database by the worker that answers; the pool's figures are set
  by each worker on every checkout and checkin.

With one process (``--workers 1``, ``--reload``, the tests) the same metrics live in that process's memory.

**Who may read them** (`MetricsMiddleware`): ``METRICS_ENABLED`` off answers /metrics like any unknown address.
Otherwise a request with ``Authorization: Bearer <METRICS_TOKEN>`` may, from anywhere; without the token, only a
client connecting directly (no proxy header at all) from an address of ``METRICS_ALLOWED_IPS`` (loopback by
default): a request a local reverse proxy forwards from the internet comes from 127.0.0.1 too, but carries
X-Forwarded-For. Anyone else gets the app's own answer for an address that does not exist.
"""

from __future__ import annotations

import glob
import hmac
import ipaddress
import os
import re
import time
from collections.abc import Callable, Iterable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client import values as _values
from prometheus_client.multiprocess import MultiProcessCollector, mark_process_dead
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.engine import Engine
from starlette.concurrency import run_in_threadpool
from starlette.routing import Match, Route

from app.responses import ASKED_HEAD

MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Whether this process writes its values to the shared directory: decided by prometheus_client when it was
# first imported, from the environment then (`ahead serve` sets it before starting the workers).
MULTIPROCESS = bool(os.environ.get(MULTIPROCESS_ENV)) and _values.ValueClass.__name__ == "MmapedValue"

# In one process the metrics are registered here; across processes they are read back from the files.
_LOCAL = None if MULTIPROCESS else CollectorRegistry(auto_describe=True)

_METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
UNROUTED = "<unrouted>"  # no route matched: 404s, and anything answered before routing
# The request's route, for MetricsMiddleware to read once the answer is sent: a dict put in the scope, shared by
# every copy of the scope the middleware in between make (ETags and HEAD answer from copies), filled by
# RouteMiddleware next to the router, or by what answers before routing (`name_route`): a visitor's page kept
# finished (app.pagecache.KeptPagesMiddleware) counts as KEPT_ROUTE, whichever page it is.
ROUTE_KEY = "ahead.metrics"
KEPT_ROUTE = "<kept page>"


def name_route(scope: dict[str, Any], route: str) -> None:
    """Count this request under `route` (for what answers it before routing)."""
    found = scope.get(ROUTE_KEY)
    if found is not None:
        found["route"] = route


class RouteMiddleware:
    """Innermost: tells MetricsMiddleware which route the router matched (the router sets it in the scope it was
    given, which the middleware outside may have copied)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        try:
            await self.app(scope, receive, send)
        finally:
            route = scope.get("route")
            if route is not None:
                name_route(scope, _template(scope, route))


class NamedRoute(Route):
    """A plain route that names itself in the scope as FastAPI's routes do (`scope["route"]`): a plain Starlette
    route does not, and its requests were counted as `<unrouted>` (the vote's routes, FastAPI's /openapi.json)."""

    def matches(self, scope: Any) -> tuple[Match, Any]:
        match, child_scope = super().matches(scope)
        if match != Match.NONE:
            child_scope["route"] = self
        return match, child_scope


def named_routes(routes: list[Any]) -> None:
    """The plain routes among `routes` (FastAPI's own /openapi.json) made `NamedRoute`s, in place."""
    for index, route in enumerate(routes):
        if type(route) is Route:
            routes[index] = NamedRoute(route.path, route.endpoint, methods=list(route.methods or ()) or None,
                                       name=route.name, include_in_schema=route.include_in_schema)


def _template(scope: dict[str, Any], route: Any) -> str:
    """The matched route's whole template. FastAPI keeps an included router's routes as they were declared (`/changelog`
    under the prefix `/admin`) and says in its own part of the scope what the prefix made of it (`/admin/changelog`);
    a route of the app's own router (the vote's) is whole as it is."""
    included = scope.get("fastapi", {}).get("effective_route_context")
    path = getattr(included, "path_format", None) if getattr(included, "original_route", None) is route else None
    return path or str(route.path)

REQUESTS = Counter("ahead_http_requests", "HTTP requests answered, by route template, method and status.",
                   ["route", "method", "status"], registry=_LOCAL)
# Seconds from the request reaching the app to its last byte leaving it. Buckets from a cached page (~1 ms) to
# the statement timeout (15 s).
DURATION = Histogram("ahead_http_request_duration_seconds", "Time to answer a request, by route template and "
                     "method.", ["route", "method"], registry=_LOCAL,
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20))
PAGE_CACHE = Counter("ahead_page_cache_lookups", "Rendered pages looked up in the workers' page cache: served "
                     "from it (hit) or rendered (miss).", ["result"], registry=_LOCAL)
_HIT, _MISS = PAGE_CACHE.labels("hit"), PAGE_CACHE.labels("miss")  # labels() costs a lock and a lookup each time
PAGE_REFRESHES = Counter("ahead_page_refreshes", "Kept pages made again for their new minute apart from any request, "
                         "in a burst after a quiet spell (app/pagecache.py): made and kept, dropped (the content "
                         "changed meanwhile, or the page is now a redirect) or failed (logged).", ["outcome"],
                         registry=_LOCAL)
POOL_SIZE = Gauge("ahead_db_pool_size", "Database connections the pools of this instance's processes keep "
                  "(DB_POOL_SIZE each).", registry=_LOCAL, multiprocess_mode="livesum")
POOL_IN_USE = Gauge("ahead_db_pool_checked_out", "Database connections in use by this instance's processes now.",
                    registry=_LOCAL, multiprocess_mode="livesum")


def reset_directory(path: str) -> None:
    """Empty a multiprocess directory of the metric files of an earlier run (and nothing else)."""
    for name in glob.glob(os.path.join(path, "*.db")):
        if re.fullmatch(r"(counter|gauge_\w+|histogram|summary)_\d+\.db", os.path.basename(name)):
            os.remove(name)


def forget_dead_processes() -> None:
    """Remove the live gauges of worker processes that no longer run (their counters stay: they were counted)."""
    if not MULTIPROCESS:
        return
    directory = os.environ[MULTIPROCESS_ENV]
    pids = {int(match[1]) for name in os.listdir(directory)
            if (match := re.fullmatch(r"gauge_live\w+?_(\d+)\.db", name))}
    for pid in pids - {os.getpid()}:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            mark_process_dead(pid, directory)
        except PermissionError:
            pass  # running, as another user


def watch_pool(engine: Engine) -> None:
    """Keep the pool gauges of this process up to date (set, not counted: a missed event corrects itself)."""
    pool: Any = engine.pool
    size = getattr(pool, "size", None)
    if callable(size):
        POOL_SIZE.set(size())

    def _checked_out(*_args: Any) -> None:
        POOL_IN_USE.set(pool.checkedout())

    def _checked_in(*_args: Any) -> None:
        POOL_IN_USE.set(max(0, pool.checkedout() - 1))  # the event comes before the pool takes it back

    event.listen(engine, "checkout", _checked_out)
    event.listen(engine, "checkin", _checked_in)


class _Local(Collector):
    def collect(self) -> Iterable[Any]:
        return _LOCAL.collect() if _LOCAL is not None else iter(())


def exposition(extra: Iterable[Collector] = ()) -> bytes:
    """The text format of every metric: all processes' (or this one's), and `extra` read now."""
    registry = CollectorRegistry(auto_describe=False)
    if MULTIPROCESS:
        MultiProcessCollector(registry)
    else:
        registry.register(_Local())
    for collector in extra:
        registry.register(collector)
    return generate_latest(registry)


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# What a scraper sends (Prometheus: Accept, Accept-Encoding, User-Agent, X-Prometheus-Scrape-Timeout-Seconds; curl:
# Host, User-Agent, Accept). Without the token, a request carrying any other header is refused: proxies, CDNs and
# meshes add headers of their own (Via, X-Forwarded-*, CDN-Loop, X-Request-Start, CF-Ray, ...), more than any list of
# them could name (two walk-throughs found twenty the earlier list let through), and such a request did not come from
# the address that connected.
_SCRAPER_HEADERS = frozenset((b"host", b"user-agent", b"accept", b"accept-encoding", b"accept-language",
                              b"connection", b"keep-alive", b"te", b"cache-control", b"pragma", b"authorization",
                              b"x-prometheus-scrape-timeout-seconds"))


class MetricsMiddleware:
    """Counts and times every request (outside the routing, so every answer counts), and answers /metrics to
    those allowed (see the module's docstring). `extra` gives collectors read at each scrape (the outbox's)."""

    def __init__(self, app: Any, *, enabled: bool, token: str, allowed: Iterable[Network],
                 page_cache: Callable[[], Any], extra: Callable[[], Iterable[Collector]] = tuple) -> None:
        self.app = app
        self.enabled = enabled
        self.token = token.encode()
        self.allowed = tuple(allowed)
        self.page_cache = page_cache
        self.extra = extra
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        self._seen = (0, 0)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not self.enabled:
            await self.app(scope, receive, send)
            return
        if scope["path"] == "/metrics" and scope["method"] in ("GET", "HEAD") and self.may_read(scope):
            await self.answer(scope, send)
            return
        started = time.perf_counter()
        status = 500
        named: dict[str, str] = {}
        scope[ROUTE_KEY] = named

        async def watching(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            self.record(scope, named.get("route"), status, time.perf_counter() - started)

    def record(self, scope: dict[str, Any], route: str | None, status: int, seconds: float) -> None:
        if route is None:
            route = "/static/{path}" if scope["path"].startswith("/static/") else UNROUTED
        method = "HEAD" if scope.get(ASKED_HEAD) else scope["method"] if scope["method"] in _METHODS else "OTHER"
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (REQUESTS.labels(route, method, str(status)),
                                              DURATION.labels(route, method))
        children[0].inc()
        children[1].observe(seconds)
        cache = self.page_cache()
        if cache is not None:
            hits, misses = cache.hits, cache.misses
            seen_hits, seen_misses = self._seen
            if hits > seen_hits:
                _HIT.inc(hits - seen_hits)
            if misses > seen_misses:
                _MISS.inc(misses - seen_misses)
            self._seen = (hits, misses)

    def may_read(self, scope: dict[str, Any]) -> bool:
        headers = scope["headers"]
        if self.token:
            given = [value for name, value in headers if name == b"authorization"]
            if given:  # a wrong token is refused, from an allowed address too (the scraper should know); so is any
                return all(self._right(value) for value in given)  # request carrying one, besides the right one
        if any(name not in _SCRAPER_HEADERS for name, _ in headers):
            return False
        client = scope.get("client")
        try:
            peer = ipaddress.ip_address(client[0]) if client else None
        except ValueError:
            return False
        return peer is not None and any(peer in network for network in self.allowed)

    def _right(self, authorization: bytes) -> bool:
        scheme, _, credentials = authorization.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(credentials.strip(), self.token)

    async def answer(self, scope: dict[str, Any], send: Any) -> None:
        # Off the event loop: reading every process's files and the outbox's depth takes a few milliseconds.
        body = await run_in_threadpool(exposition, self.extra())
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", CONTENT_TYPE_LATEST.encode()),
                                (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"no-store")]})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
