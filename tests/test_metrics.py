"""/metrics: what an operator's Prometheus reads (requests by route template, latency, page cache, outbox, pool),
who may read it, that nothing a visitor does makes it grow or makes it tell anything about customers, and that
with several worker processes every scrape adds up all of them."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.accounts.models import Role
from app.config import ROOT, Settings
from app.db import Database, utcnow
from app.main import create_app
from app.migrate import upgrade
from app.outbox import service as outbox
from tests.factories import make_item, make_user
from tests.helpers.http import bound_database, sign_in
from tests.helpers.servers import free_port

TOKEN = "metrics-token-" + "m" * 24


@asynccontextmanager
async def client_for(settings: Settings, database: Database, connection: Connection, *,
                     peer: str = "127.0.0.1") -> AsyncIterator[httpx.AsyncClient]:
    """A client of an app built from `settings`, connecting from `peer`, on the test's rolled-back connection."""
    app = create_app(settings, bound_database(database, connection))
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app, client=(peer, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client


def samples(text: str) -> list[tuple[str, dict[str, str], float]]:
    """Each sample of the text format: name, labels, value."""
    found = []
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if match:
            found.append((match[1], dict(re.findall(r'(\w+)="([^"]*)"', match[2] or "")), float(match[3])))
    return found


def value(text: str, name: str, **labels: str) -> float:
    """A sample's value (0 when it is not there)."""
    return next((v for n, found, v in samples(text) if n == name and found == labels), 0.0)


def series(text: str, name: str) -> list[dict[str, str]]:
    return [labels for n, labels, _ in samples(text) if n == name]


async def scrape(client: httpx.AsyncClient, **headers: str) -> httpx.Response:
    return await client.get("/metrics", headers=headers)


class TestWhoMayRead:
    async def test_a_direct_connection_from_loopback_reads_them(self, settings: Settings, database: Database,
                                                                connection: Connection) -> None:
        async with client_for(settings, database, connection) as client:
            answer = await scrape(client)
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/plain; version=")
        assert answer.headers["cache-control"] == "no-store"
        assert "# TYPE ahead_http_requests_total counter" in answer.text

    async def test_anyone_else_gets_what_an_unknown_address_gets(self, settings: Settings, database: Database,
                                                                 connection: Connection) -> None:
        async with client_for(settings, database, connection, peer="203.0.113.7") as client:
            unknown = await client.get("/no-such-page")
            answer = await scrape(client)
            wrong = await scrape(client, authorization="Bearer " + "x" * 40)
        assert unknown.status_code == answer.status_code == wrong.status_code == 404
        assert answer.text == unknown.text.replace("/no-such-page", "/metrics")
        assert "ahead_" not in answer.text + wrong.text

    async def test_a_request_a_proxy_forwarded_is_refused_though_the_proxy_is_on_loopback(
            self, settings: Settings, database: Database, connection: Connection) -> None:
        # nginx on the same machine connects from 127.0.0.1 for every visitor on the internet.
        for trusted in ("", "127.0.0.1"):
            proxied = settings.model_copy(update={"trusted_proxies": trusted})
            async with client_for(proxied, database, connection) as client:
                # ... and those a walk-through found let through: the one RFC 9110 has every proxy add, the rest of
                # the X-Forwarded family, other vendors' client addresses, and underscores for dashes
                for header in ("x-forwarded-for", "x-real-ip", "forwarded", "x-client-ip", "true-client-ip",
                               "cf-connecting-ip", "via", "x-forwarded-host", "x-forwarded-proto", "x-forwarded",
                               "forwarded-for", "x-original-forwarded-for", "client-ip", "akamai-client-ip",
                               "x-azure-clientip", "x-envoy-external-address", "x_forwarded_for",
                               # ... and those a second one found: what any header outside a scraper's means
                               "cdn-loop", "cf-ray", "x-request-start", "x-amzn-trace-id", "x-scheme",
                               "max-forwards", "x-originating-ip", "x-appengine-user-ip", "x-made-up"):
                    answer = await scrape(client, **{header: "127.0.0.1"})
                    assert answer.status_code == 404, (trusted, header)

    async def test_what_prometheus_sends_reads_them(self, settings: Settings, database: Database,
                                                    connection: Connection) -> None:
        async with client_for(settings, database, connection) as client:
            answer = await scrape(client, **{
                "accept": "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
                "accept-encoding": "gzip", "user-agent": "Prometheus/2.53.0",
                "x-prometheus-scrape-timeout-seconds": "10"})
        assert answer.status_code == 200 and "ahead_http_requests_total" in answer.text

    async def test_the_token_opens_them_from_anywhere(self, settings: Settings, database: Database,
                                                      connection: Connection) -> None:
        with_token = settings.model_copy(update={"metrics_token": TOKEN})
        async with client_for(with_token, database, connection, peer="198.51.100.20") as client:
            assert (await scrape(client, authorization=f"Bearer {TOKEN}")).status_code == 200
            assert (await scrape(client, authorization=f"bearer {TOKEN}")).status_code == 200  # the scheme's any case
            assert (await scrape(client, authorization=f"Bearer {TOKEN[:-1]}")).status_code == 404
            assert (await scrape(client, authorization=f"Basic {TOKEN}")).status_code == 404
            assert (await scrape(client, authorization=TOKEN)).status_code == 404
            assert (await client.get(f"/metrics?token={TOKEN}")).status_code == 404
        # from an allowed address, no token is needed, but a wrong one is refused (a misconfigured scraper finds out)
        async with client_for(with_token, database, connection) as client:
            assert (await scrape(client)).status_code == 200
            assert (await scrape(client, authorization=f"Bearer {TOKEN}")).status_code == 200
            assert (await scrape(client, authorization="Bearer wrong")).status_code == 404
            for pair in ([f"Bearer {TOKEN}", "Bearer wrong"], ["Bearer wrong", f"Bearer {TOKEN}"]):
                two = await client.get("/metrics", headers=[("authorization", value) for value in pair])
                assert two.status_code == 404, pair  # a wrong one beside the right one is still a wrong one

    async def test_allowed_addresses_are_a_setting(self, settings: Settings, database: Database,
                                                   connection: Connection) -> None:
        prometheus = settings.model_copy(update={"metrics_allowed_ips": "10.20.0.0/16"})
        async with client_for(prometheus, database, connection, peer="10.20.3.4") as client:
            assert (await scrape(client)).status_code == 200
        async with client_for(prometheus, database, connection) as client:
            assert (await scrape(client)).status_code == 404  # loopback is no longer listed

    async def test_turned_off_there_is_nothing_at_the_address(self, settings: Settings, database: Database,
                                                              connection: Connection) -> None:
        off = settings.model_copy(update={"metrics_enabled": False, "metrics_token": TOKEN})
        async with client_for(off, database, connection) as client:
            assert (await scrape(client, authorization=f"Bearer {TOKEN}")).status_code == 404

    def test_a_short_or_placeholder_token_is_refused_at_start(self) -> None:
        for token in ("changeme", "short-token", " " + TOKEN):
            with pytest.raises(ValueError, match="METRICS_TOKEN"):
                Settings(metrics_token=token, _env_file=None)  # type: ignore[call-arg]
        with pytest.raises(ValueError, match="METRICS_ALLOWED_IPS"):
            Settings(metrics_allowed_ips="prometheus.internal", _env_file=None)  # type: ignore[call-arg]


class TestWhatTheyCount:
    async def test_requests_by_route_template_method_and_status(
            self, settings: Settings, database: Database, connection: Connection, session: Session) -> None:
        item = make_item(session, title="Offline rota editing for Harbour Health")
        session.flush()
        async with client_for(settings, database, connection) as client:
            before = (await scrape(client)).text
            assert (await client.get(f"/items/{item.public_id}/{item.slug}")).status_code == 200
            assert (await client.post(f"/items/{item.public_id}/vote")).status_code == 403  # no CSRF token
            after = (await scrape(client)).text
        route = {"route": "/items/{public_id}/{slug}", "method": "GET", "status": "200"}
        assert value(after, "ahead_http_requests_total", **route) == value(before, "ahead_http_requests_total",
                                                                            **route) + 1
        assert value(after, "ahead_http_request_duration_seconds_count", route="/items/{public_id}/{slug}",
                     method="GET") >= 1
        assert {"route": "/items/{public_id}/vote", "method": "POST", "status": "403"} in series(
            after, "ahead_http_requests_total")
        # Nothing about the item or who asked: the template, never the address.
        assert item.public_id not in after and item.slug not in after and "Harbour" not in after

    async def test_a_head_counts_as_a_head(self, settings: Settings, database: Database,
                                           connection: Connection) -> None:
        """Uptime monitors send HEAD, answered as the GET inside (app.responses.HeadMiddleware): it was counted as a
        GET, and the HEAD series the metrics list never appeared (a walk-through)."""
        async with client_for(settings, database, connection) as client:
            before = (await scrape(client)).text
            for _ in range(3):
                assert (await client.head("/healthz")).status_code == 200
            after = (await scrape(client)).text
        for method, more in (("HEAD", 3), ("GET", 0)):
            labels = {"route": "/healthz", "method": method, "status": "200"}
            assert value(after, "ahead_http_requests_total", **labels) == value(
                before, "ahead_http_requests_total", **labels) + more, method

    async def test_a_route_under_a_prefix_is_counted_under_its_whole_template(
            self, settings: Settings, database: Database, connection: Connection, session: Session) -> None:
        """The admin's pages are declared under the prefix /admin: each counts as itself, not as the public page
        of the same name (found by a walk-through: /admin/changelog was counted as /changelog, /admin as "")."""
        admin = make_user(session, role=Role.admin)
        async with client_for(settings, database, connection) as client:
            sign_in(client, session, admin)
            assert (await client.get("/admin/changelog")).status_code == 200
            assert (await client.get("/admin")).status_code == 200
            assert (await client.get("/changelog")).status_code == 200
            client.cookies.clear()
            counted = {labels["route"] for labels in series((await scrape(client)).text, "ahead_http_requests_total")}
        assert {"/admin/changelog", "/admin", "/changelog"} <= counted
        assert "" not in counted

    async def test_the_api_description_is_counted_under_its_own_name(
            self, settings: Settings, database: Database, connection: Connection) -> None:
        """FastAPI's /openapi.json is a plain route: it was counted as "<unrouted>", which the operator's guide
        says are the requests no route matched (a walk-through)."""
        unrouted = {"route": "<unrouted>", "method": "GET", "status": "200"}
        async with client_for(settings, database, connection) as client:
            before = (await scrape(client)).text
            assert (await client.get("/openapi.json")).status_code == 200
            assert (await client.head("/openapi.json")).status_code == 200
            after = (await scrape(client)).text
        for method in ("GET", "HEAD"):
            labels = {"route": "/openapi.json", "method": method, "status": "200"}
            assert value(after, "ahead_http_requests_total", **labels) == value(
                before, "ahead_http_requests_total", **labels) + 1, method
        assert value(after, "ahead_http_requests_total", **unrouted) == value(
            before, "ahead_http_requests_total", **unrouted)

    async def test_no_visitor_can_make_them_grow(self, settings: Settings, database: Database,
                                                 connection: Connection) -> None:
        async with client_for(settings, database, connection, peer="203.0.113.9") as client:
            for n in range(40):
                await client.get(f"/made-up-{n}-{os.urandom(4).hex()}")
                await client.get(f"/items/nope{n}")
                await client.request(f"BREW{n}", "/")
        async with client_for(settings, database, connection) as client:
            text = (await scrape(client)).text
        routes = {labels["route"] for labels in series(text, "ahead_http_requests_total")}
        methods = {labels["method"] for labels in series(text, "ahead_http_requests_total")}
        assert not any("made-up" in route or "nope" in route for route in routes)
        assert "<unrouted>" in routes
        assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER"}
        assert "OTHER" in methods

    async def test_page_cache_hits_and_misses(self, settings: Settings, database: Database,
                                              connection: Connection, session: Session) -> None:
        make_item(session)
        session.flush()
        async with client_for(settings, database, connection) as client:
            before = (await scrape(client)).text
            for _ in range(3):
                assert (await client.get("/")).status_code == 200
            after = (await scrape(client)).text
        hits = value(after, "ahead_page_cache_lookups_total", result="hit") - value(
            before, "ahead_page_cache_lookups_total", result="hit")
        misses = value(after, "ahead_page_cache_lookups_total", result="miss") - value(
            before, "ahead_page_cache_lookups_total", result="miss")
        assert misses >= 1 and hits >= 2

    async def test_pages_answered_before_routing_count_as_kept_pages(
            self, settings: Settings, database: Database, connection: Connection, session: Session) -> None:
        make_item(session)
        session.flush()
        async with client_for(settings, database, connection) as client:
            before = (await scrape(client)).text
            for _ in range(3):
                client.cookies.clear()  # a visitor without cookies: served from the page kept finished
                assert (await client.get("/")).status_code == 200
            after = (await scrape(client)).text
        kept = {"route": "<kept page>", "method": "GET", "status": "200"}
        assert value(after, "ahead_http_requests_total", **kept) >= value(
            before, "ahead_http_requests_total", **kept) + 1

    async def test_outbox_depth_and_the_pool(self, settings: Settings, database: Database,
                                             connection: Connection, session: Session) -> None:
        customer = make_user(session, email="secret.person@harbourhealth.example")
        outbox.enqueue(session, outbox.EMAIL_KIND, {"to": customer.email, "subject": "s", "text": "t"},
                       run_at=utcnow() - timedelta(seconds=90))
        outbox.enqueue(session, outbox.EMAIL_KIND, {"to": customer.email, "subject": "s", "text": "t"},
                       run_at=utcnow() + timedelta(hours=1))
        session.flush()
        async with client_for(settings, database, connection) as client:
            text = (await scrape(client)).text
        assert value(text, "ahead_database_up") == 1
        assert value(text, "ahead_outbox_jobs", state="pending") >= 2
        assert value(text, "ahead_outbox_jobs", state="due") >= 1
        assert 80 <= value(text, "ahead_outbox_oldest_due_seconds") < 3600
        assert value(text, "ahead_db_pool_size") >= 1
        assert "ahead_db_pool_checked_out" in text
        assert "harbourhealth" not in text and "secret.person" not in text


def test_serve_gives_its_workers_a_metrics_directory_and_takes_it_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import uvicorn
    from typer.testing import CliRunner

    from app.cli import cli
    from app.config import get_settings

    seen: list[str | None] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **options: seen.append(os.environ.get("PROMETHEUS_MULTIPROC_DIR")))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    monkeypatch.setenv("PORT", "8000")
    get_settings.cache_clear()
    try:
        assert CliRunner().invoke(cli, ["serve", "--workers", "2"]).exit_code == 0
        assert CliRunner().invoke(cli, ["serve", "--workers", "1"]).exit_code == 0
    finally:
        get_settings.cache_clear()
    [shared, single] = seen
    assert shared and "ahead-metrics-" in shared and single is None  # one process counts in its own memory
    # Gone afterwards, from the disk and from the environment a process started later would inherit.
    assert not Path(shared).exists() and "PROMETHEUS_MULTIPROC_DIR" not in os.environ


def test_the_pool_gauge_follows_connections_out_and_back(tmp_path: Path) -> None:
    from app import metrics
    from app.db import make_engine

    engine = make_engine(f"sqlite+pysqlite:///{tmp_path / 'pool.db'}")
    metrics.watch_pool(engine)
    try:
        first = engine.connect()
        second = engine.connect()
        assert metrics.POOL_IN_USE._value.get() == 2
        second.close()
        assert metrics.POOL_IN_USE._value.get() == 1
        first.close()
        assert metrics.POOL_IN_USE._value.get() == 0
    finally:
        engine.dispose()


# Sent to `ahead serve --workers 2` from outside: a scrape reaches whichever worker the kernel hands the
# connection to. Counted per process, scrapes would disagree; added up across processes, each says the same.
def test_with_several_workers_every_scrape_counts_every_workers_requests(tmp_path: Path) -> None:
    url = f"sqlite+pysqlite:///{tmp_path / 'ahead.db'}"
    upgrade(url)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "metrics-test-secret-" + "s" * 32, "TMPDIR": str(tmp_path),
           "BASE_URL": base, "AHEAD_ENV": "development", "OUTBOX_WORKER": "false", "PYTHONUNBUFFERED": "1"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    env.pop("REDIS_URL", None)
    log = (tmp_path / "server.log").open("wb")
    server = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", "2"],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 150  # a busy 2-core machine took 50 s to start two workers
        while True:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert server.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()
            time.sleep(0.2)
        [directory] = tmp_path.glob("ahead-metrics-*")

        def healthz_count() -> float:
            # A new connection each time: each may go to either worker.
            text = httpx.get(f"{base}/metrics", headers={"connection": "close"}, timeout=5).text
            return value(text, "ahead_http_requests_total", route="/healthz", method="GET", status="200")

        first = healthz_count()
        for _ in range(30):
            assert httpx.get(f"{base}/healthz", headers={"connection": "close"}, timeout=5).status_code == 200
        counts = [healthz_count() for _ in range(8)]
        assert counts == [first + 30] * 8
        assert len({path.name.split("_")[-1] for path in directory.glob("counter_*.db")}) == 2  # both workers counted
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
            log.close()
    assert not list(tmp_path.glob("ahead-metrics-*")), "the run's metrics directory is removed when it stops"
