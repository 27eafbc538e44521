"""The perimeter (app/perimeter.py): request bodies within their caps, the client's address behind proxies."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest
from fastapi import Request

from app.config import Settings
from app.main import UPLOAD_PATHS, create_app
from app.perimeter import BodyLimitMiddleware
from tests.admin.helpers import PNG, branding_form
from tests.factories import make_admin
from tests.helpers.databases import own_database
from tests.helpers.http import client_for, csrf_token, post_form, sign_in
from tests.helpers.servers import serve

MiB = 1024 * 1024


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


class TestBodyCap:
    async def test_a_declared_length_over_the_cap_is_refused_before_the_app_reads_anything(self):
        calls: list[str] = []

        async def app(scope, receive, send):  # type: ignore[no-untyped-def]
            calls.append("app")

        async def receive():  # type: ignore[no-untyped-def]
            raise AssertionError("the body was read")

        sent: list[dict] = []  # type: ignore[type-arg]

        async def send(message):  # type: ignore[no-untyped-def]
            sent.append(message)

        middleware = BodyLimitMiddleware(app, max_body=MiB, max_upload=5 * MiB)
        scope = {"type": "http", "method": "POST", "path": "/login",
                 "headers": [(b"content-length", str(300 * MiB).encode())]}
        await middleware(scope, receive, send)
        assert calls == [] and sent[0]["status"] == 413
        assert b"larger than the 1 MiB" in sent[1]["body"]

    async def test_a_chunked_body_stops_being_read_once_past_the_cap(self, client):
        pulled = 0

        async def chunks():  # type: ignore[no-untyped-def]
            nonlocal pulled
            for _ in range(300 * 16):  # 300 MiB in 64 KiB pieces, made as they are read
                pulled += 1
                yield b"a=" + b"x" * (64 * 1024 - 2)

        response = await client.post("/login", content=chunks(),
                                     headers={"content-type": "application/x-www-form-urlencoded"})
        assert response.status_code == 413
        assert "larger than the 1 MiB this address accepts" in response.text
        assert 'class="site-header"' in response.text  # the portal's own error page
        assert pulled <= 17  # 1 MiB and one piece more, not 300 MiB

    async def test_the_api_answers_json(self, client):
        response = await client.post("/api/v1/items/abc/vote", content=b"{" + b" " * (2 * MiB) + b"}",
                                     headers={"content-type": "application/json"})
        assert response.status_code == 413
        assert response.json()["error"] == "too_large"

    async def test_an_ordinary_form_still_works(self, client, session):
        response = await post_form(client, "/login", {"email": "nobody@example.com", "password": "x" * 1000})
        assert response.status_code == 400  # read, checked, refused as a failed sign-in

    async def test_an_upload_between_the_two_caps_reaches_the_upload_route_only(self, client, session):
        sign_in(client, session, make_admin(session))
        big = PNG + b"\0" * (2 * MiB)
        upload = await post_form(client, "/admin/settings", branding_form(), page="/admin/settings",
                                 files={"logo": ("logo.png", big, "image/png")})
        assert upload.status_code == 422  # through the cap: the logo's own 512 KB rule answers
        assert "The logo may be 512 KB at most" in upload.text
        token = await csrf_token(client, "/admin/settings")
        elsewhere = await client.post("/admin/settings/votes", data={"csrf_token": token},
                                      files={"logo": ("logo.png", big, "image/png")})
        assert elsewhere.status_code == 413
        too_big = await client.post("/admin/settings", data={"csrf_token": token},
                                    files={"logo": ("logo.png", b"\0" * (6 * MiB), "image/png")})
        assert too_big.status_code == 413 and "5 MiB" in too_big.text

    def test_every_route_that_takes_a_file_is_an_upload_path(self, app):
        """A new upload route that is not in UPLOAD_PATHS would refuse every file over 1 MiB."""
        from fastapi.params import File
        from fastapi.routing import APIRoute

        def routes(within, prefix=""):  # type: ignore[no-untyped-def]
            for route in within:  # included routers keep theirs in original_router, the prefix apart (FastAPI 0.16x)
                if hasattr(route, "original_router"):
                    yield from routes(route.original_router.routes, prefix + route.include_context.prefix)
                else:
                    yield prefix, route

        takes_files = {prefix + route.path for prefix, route in routes(app.routes) if isinstance(route, APIRoute)
                       and any(isinstance(p.field_info, File) for p in route.dependant.body_params)}
        assert takes_files and takes_files <= set(UPLOAD_PATHS)


@pytest.fixture(scope="module")
def live_portal(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    with own_database(tmp_path_factory.mktemp("perimeter"), "perimeter") as url:
        settings = Settings(database_url=url, secret_key="k" * 40, base_url="http://testserver", redis_url="",
                            _env_file=None)  # type: ignore[call-arg]
        with serve(create_app(settings)) as base:
            yield base


def test_a_300_mib_chunked_body_against_uvicorn_is_refused_without_the_server_growing(live_portal):
    """uvicorn runs in a thread of this process: this process's resident memory is the server's. The body is
    made as it is sent."""
    sent = 0

    def chunks():  # type: ignore[no-untyped-def]
        nonlocal sent
        piece = b"x" * (256 * 1024)
        for _ in range(300 * 4):
            sent += len(piece)
            yield piece

    with httpx.Client(base_url=live_portal, timeout=60) as client:
        client.get("/healthz")
        before = _rss_bytes()
        peak = before
        done = threading.Event()

        def watch() -> None:
            nonlocal peak
            while not done.is_set():
                peak = max(peak, _rss_bytes())
                time.sleep(0.01)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        started = time.monotonic()
        try:
            # A JSON body: FastAPI reads one whole before validating it, so uncapped it would sit in memory.
            response = client.post("/api/v1/items/abcdefgh/vote", content=chunks(),
                                   headers={"content-type": "application/json"})
        finally:
            done.set()
            watcher.join()
        assert peak - before < 20 * MiB, f"resident memory grew by {(peak - before) / MiB:.0f} MiB"
        assert response.status_code == 413 and response.json()["error"] == "too_large"
        assert time.monotonic() - started < 20
        assert client.get("/healthz").status_code == 200  # and the server goes on serving


class TestTrustedProxies:
    def test_the_right_most_address_no_trusted_proxy_wrote_is_the_client(self):
        import ipaddress

        from app.perimeter import TrustedProxyMiddleware

        middleware = TrustedProxyMiddleware(None, trusted=[ipaddress.ip_network("10.0.0.0/8"),
                                                           ipaddress.ip_network("::1")])
        assert middleware.client_from("203.0.113.7", peer="10.0.0.2") == "203.0.113.7"
        # whatever the client wrote itself stays to the left of what our proxies appended
        assert middleware.client_from("6.6.6.6, 203.0.113.7, 10.1.2.3", peer="10.0.0.2") == "203.0.113.7"
        assert middleware.client_from("10.9.9.9, 10.1.1.1", peer="10.0.0.2") == "10.9.9.9"  # all ours
        assert middleware.client_from("not-an-address", peer="10.0.0.2") == "10.0.0.2"

    async def test_cli_serve_leaves_forwarded_headers_to_trusted_proxies(self, monkeypatch):
        import uvicorn
        from typer.testing import CliRunner

        from app.cli import cli

        seen: dict = {}  # type: ignore[type-arg]
        monkeypatch.setattr(uvicorn, "run", lambda *args, **kwargs: seen.update(kwargs))
        assert CliRunner().invoke(cli, ["serve", "--port", "8765"]).exit_code == 0
        assert seen["proxy_headers"] is False

    async def test_a_spoofed_forwarded_for_from_an_untrusted_peer_is_ignored(self, app, client):
        """The test client connects from 127.0.0.1, which is not trusted by default: changing X-Forwarded-For
        on every attempt does not get past the per-client-IP sign-in limit (per day here, so no window
        boundary falls inside the test)."""
        app.state.settings = app.state.settings.model_copy(update={"login_ip_rate_limit": "10/day"})
        statuses = [await self._failed_login(client, n, forwarded=f"198.51.100.{n}") for n in range(14)]
        assert statuses == [400] * 10 + [429] * 4

    async def test_from_a_trusted_proxy_the_forwarded_client_counts(self, database, connection):

        settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="http://testserver",
                            redis_url="", trusted_proxies="127.0.0.1, 10.0.0.0/8", login_ip_rate_limit="10/day",
                            _env_file=None)
        async with client_for(settings, database, connection, extra_route=_whoami) as client:
            seen = (await client.get("/whoami", headers={"x-forwarded-for": "6.6.6.6, 198.51.100.1",
                                                         "x-forwarded-proto": "https"})).json()
            assert seen == {"client": "198.51.100.1", "scheme": "https"}
            # twelve people behind the proxy: each has a budget of their own
            statuses = [await self._failed_login(client, n, forwarded=f"198.51.100.{n}, 10.0.0.9")
                        for n in range(12)]
            assert statuses == [400] * 12
            # one person is still limited, whatever they put in front
            statuses = [await self._failed_login(client, n, forwarded=f"6.6.6.{n}, 198.51.100.200")
                        for n in range(14)]
            assert statuses == [400] * 10 + [429] * 4

    async def test_an_untrusted_peer_cannot_claim_another_address_or_scheme(self, database, connection):

        settings = Settings(database_url=database.url, secret_key="k" * 40, base_url="http://testserver",
                            redis_url="", trusted_proxies="10.0.0.0/8", _env_file=None)
        async with client_for(settings, database, connection, extra_route=_whoami) as client:
            seen = (await client.get("/whoami", headers={"x-forwarded-for": "198.51.100.1",
                                                         "x-forwarded-proto": "https"})).json()
        assert seen == {"client": "127.0.0.1", "scheme": "http"}

    @staticmethod
    async def _failed_login(client, n, *, forwarded):  # type: ignore[no-untyped-def]
        token = await csrf_token(client, "/login")
        response = await client.post("/login", data={"email": f"person{n}@example.com", "password": "wrong",
                                                     "csrf_token": token},
                                     headers={"x-forwarded-for": forwarded})
        return response.status_code


def _whoami(app):  # type: ignore[no-untyped-def]
    @app.get("/whoami")
    async def whoami(request: Request) -> dict[str, str]:
        return {"client": request.client.host if request.client else "", "scheme": request.url.scheme}
