"""The deployment files: nginx's configuration holds (`nginx -t`) and, run for real in front of stand-in
instances, retries what may be retried (the idempotent vote too) and never another POST that reached an instance; compose.yaml wires real
settings, runs migrations before the app, and trusts only the proxy's address."""

from __future__ import annotations

import ipaddress
import re
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from app.config import Settings
from tests.helpers import nginx
from tests.helpers.browser import in_ci
from tests.helpers.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES: dict[str, Any] = COMPOSE["services"]
AHEAD_SERVICES = ("migrate", "app", "worker")


@pytest.fixture(scope="module")
def nginx_available() -> None:
    if nginx.nginx_binary() is None:
        message = "Debian's nginx is not installed (`make test-tools` installs it)"
        if in_ci():
            pytest.fail(message + " (CI=true: the proxy's configuration must be checked)", pytrace=False)
        pytest.skip(message)


class Instance:
    """A stand-in app instance on loopback: answers every request with what it received (`healthy`), or reads
    the whole request and closes the connection without answering, as an instance killed mid-request does."""

    def __init__(self, *, healthy: bool) -> None:
        self.healthy = healthy
        self.port = free_port()
        self.requests: list[dict[str, str]] = []
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(connection,), daemon=True).start()

    def _answer(self, connection: socket.socket) -> None:
        with connection:
            connection.settimeout(5)
            while request := _read_request(connection):
                self.requests.append(request)
                if not self.healthy:
                    return  # closes the connection: nginx got no answer at all
                body = "\n".join(f"{k}: {v}" for k, v in request.items()).encode()
                connection.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\n"
                                   + f"content-length: {len(body)}\r\n\r\n".encode() + body)

    def close(self) -> None:
        self._listener.close()

    def seen(self, method: str) -> list[str]:
        return [r["body"] for r in self.requests if r["method"] == method]


def _read_request(connection: socket.socket) -> dict[str, str] | None:
    data = b""
    while b"\r\n\r\n" not in data:
        try:
            chunk = connection.recv(65536)
        except OSError:
            return None
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        body += connection.recv(65536)
    return {"method": method, "path": path, "body": body.decode(),
            **{name: headers.get(name, "") for name in ("host", "x-forwarded-for", "x-forwarded-proto",
                                                         "x-forwarded-host", "proxy")}}


@pytest.fixture
def instances() -> Iterator[tuple[Instance, Instance]]:
    crashing, healthy = Instance(healthy=False), Instance(healthy=True)
    yield crashing, healthy
    crashing.close()
    healthy.close()


def _nginx_in_front(tmp_path: Path, upstreams: list[str]) -> tuple[Path, int, int]:
    http_port, https_port = free_port(), free_port()
    return nginx.write_config(tmp_path, upstreams=upstreams, http_port=http_port, https_port=https_port), \
        http_port, https_port


class TestNginxConfiguration:
    def test_nginx_accepts_the_configuration(self, nginx_available: None, tmp_path: Path) -> None:
        conf, _, _ = _nginx_in_front(tmp_path, ["127.0.0.1:8000", "127.0.0.1:8001"])
        result = nginx.check(conf)
        assert result.returncode == 0, result.stderr
        assert "test is successful" in result.stderr

    @pytest.mark.parametrize("path", ["/items/abc/comments", "/ideas", "/admin/items/abc/stage"])
    def test_a_post_that_reached_an_instance_is_never_sent_to_another(
            self, nginx_available: None, tmp_path: Path, instances: tuple[Instance, Instance], path: str) -> None:
        crashing, healthy = instances
        conf, _, port = _nginx_in_front(tmp_path, [crashing.address, healthy.address])
        with nginx.running(conf, port=port), httpx.Client(verify=False, timeout=10) as client:  # nosec B501 # our own throw-away certificate
            answers = [client.post(f"https://127.0.0.1:{port}{path}", content=f"post-{n}") for n in range(2)]
        # Round robin sends one of the two to the instance that dies with it: that one fails, and nothing else
        # received it (a comment sent again would be posted twice).
        assert sorted(a.status_code for a in answers) == [200, 502]
        assert len(crashing.seen("POST")) == 1
        assert crashing.seen("POST")[0] not in healthy.seen("POST")
        assert len(healthy.seen("POST")) == 1

    @pytest.mark.parametrize(("method", "path"), [
        ("POST", "/items/abc/vote"), ("POST", "/items/abc/unvote"), ("POST", "/api/v1/items/abc/vote"),
        ("DELETE", "/api/v1/items/abc/vote")])
    def test_a_vote_sent_to_an_instance_that_dies_with_it_is_passed_to_another(
            self, nginx_available: None, tmp_path: Path, instances: tuple[Instance, Instance], method: str,
            path: str) -> None:
        """The vote and its withdrawal are idempotent (the app's tests: the same vote twice is one vote): an
        instance stopping as nginx sends one must not cost the person their vote."""
        crashing, healthy = instances
        conf, _, port = _nginx_in_front(tmp_path, [crashing.address, healthy.address])
        with nginx.running(conf, port=port), httpx.Client(verify=False, timeout=10) as client:  # nosec B501 # our own throw-away certificate
            answers = [client.request(method, f"https://127.0.0.1:{port}{path}", content=f"vote-{n}")
                       for n in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert len(crashing.seen(method)) == 1
        assert sorted(healthy.seen(method)) == ["vote-0", "vote-1"]
        # Every other header as for any request (the location inherits them)
        assert all(r["x-forwarded-proto"] == "https" for r in healthy.requests)

    def test_a_page_read_from_a_dying_instance_is_read_from_another(
            self, nginx_available: None, tmp_path: Path, instances: tuple[Instance, Instance]) -> None:
        crashing, healthy = instances
        conf, _, port = _nginx_in_front(tmp_path, [crashing.address, healthy.address])
        with nginx.running(conf, port=port), httpx.Client(verify=False, timeout=10) as client:  # nosec B501 # our own throw-away certificate
            answers = [client.get(f"https://127.0.0.1:{port}/") for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert len(crashing.seen("GET")) == 1  # one of them went there first, and was passed on

    def test_a_vote_for_an_instance_that_is_down_goes_to_another(
            self, nginx_available: None, tmp_path: Path, instances: tuple[Instance, Instance]) -> None:
        _, healthy = instances
        down = f"127.0.0.1:{free_port()}"  # nothing listens: the connection is refused, nothing was sent
        conf, _, port = _nginx_in_front(tmp_path, [down, healthy.address])
        with nginx.running(conf, port=port), httpx.Client(verify=False, timeout=10) as client:  # nosec B501 # our own throw-away certificate
            answers = [client.post(f"https://127.0.0.1:{port}/items/abc/vote", content=f"vote-{n}")
                       for n in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert sorted(healthy.seen("POST")) == ["vote-0", "vote-1"]

    def test_the_app_hears_who_the_client_is_and_that_it_used_https(
            self, nginx_available: None, tmp_path: Path, instances: tuple[Instance, Instance]) -> None:
        _, healthy = instances
        conf, http_port, port = _nginx_in_front(tmp_path, [healthy.address])
        with nginx.running(conf, port=port), httpx.Client(verify=False, timeout=10) as client:  # nosec B501 # our own throw-away certificate
            plain = client.get(f"http://127.0.0.1:{http_port}/items/abc?x=1")
            page = client.get(f"https://127.0.0.1:{port}/", headers={
                "x-forwarded-for": "203.0.113.9", "x-forwarded-host": "evil.example", "proxy": "http://evil"})
            metrics = client.get(f"https://127.0.0.1:{port}/metrics")
            ready = client.get(f"https://127.0.0.1:{port}/readyz")
            alive = client.get(f"https://127.0.0.1:{port}/healthz")
        assert plain.status_code == 301
        assert plain.headers["location"] == "https://127.0.0.1/items/abc?x=1"
        assert page.status_code == 200
        assert "max-age=31536000" in page.headers["strict-transport-security"]
        request = next(r for r in healthy.requests if r["path"] == "/")
        # The client's own claim stays on the left; the app reads from the right (TRUSTED_PROXIES).
        assert request["x-forwarded-for"] == "203.0.113.9, 127.0.0.1"
        assert request["x-forwarded-proto"] == "https"
        assert request["x-forwarded-host"] == "" and request["proxy"] == ""
        assert metrics.status_code == 404
        assert all(r["path"] != "/metrics" for r in healthy.requests)
        # Readiness names the schema's revision and the mail and Redis set-up: instances only, never the public
        assert ready.status_code == 404
        assert all(r["path"] != "/readyz" for r in healthy.requests)
        assert alive.status_code == 200 and healthy.requests[-1]["path"] == "/healthz"

    def test_only_the_votes_are_declared_retryable(self) -> None:
        text = (nginx.LOCATIONS.read_text() + nginx.SITE.read_text())
        directives = [line.split("#")[0] for line in text.splitlines()]
        retried = [n for n, line in enumerate(directives) if "non_idempotent" in line]
        assert len(retried) == 1
        assert directives[retried[0] - 1].strip() == "location ~ ^/(api/v1/)?items/[^/]+/(vote|unvote)$ {"

    def test_the_body_cap_lets_the_largest_upload_through(self) -> None:
        size = re.search(r"client_max_body_size (\d+)m;", nginx.LOCATIONS.read_text())
        assert size and int(size[1]) * 1024 * 1024 >= Settings.model_fields["max_upload_bytes"].default


def _environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in SERVICES[service]["environment"].items()}


class TestCompose:
    def test_it_has_the_parts_a_deployment_needs(self) -> None:
        assert {"app", "worker", "db", "redis", "nginx", "migrate"} <= set(SERVICES)

    def test_every_variable_given_to_ahead_is_a_setting(self) -> None:
        settings = {name.upper() for name in Settings.model_fields}
        for service in AHEAD_SERVICES:
            unknown = set(_environment(service)) - settings
            assert not unknown, f"{service}: {unknown} are not settings of app/config.py"

    def test_production_needs_its_secrets_from_the_operator(self) -> None:
        environment = _environment("app")
        assert environment["AHEAD_ENV"] == "production"
        for name in ("SECRET_KEY", "BASE_URL"):
            assert environment[name].startswith(f"${{{name}:?"), f"{name} must be required, not defaulted"

    def test_the_app_reaches_the_database_and_redis_it_is_given(self) -> None:
        environment, db = _environment("app"), SERVICES["db"]["environment"]
        url = environment["DATABASE_URL"]
        assert url.startswith(f"postgresql://{db['POSTGRES_USER']}:")
        assert url.endswith(f"@db:5432/{db['POSTGRES_DB']}")
        assert environment["REDIS_URL"] == "redis://redis:6379/0"
        for service in AHEAD_SERVICES:
            assert "backend" in SERVICES[service]["networks"]

    def test_migrations_run_once_before_any_instance_starts(self) -> None:
        assert SERVICES["migrate"]["command"] == ["ahead", "migrate"]
        for service in ("app", "worker"):
            assert "migrate" not in " ".join(SERVICES[service]["command"])
            assert SERVICES[service]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"

    def test_only_the_proxy_is_trusted_and_only_it_is_published(self) -> None:
        proxy = ipaddress.ip_address(SERVICES["nginx"]["networks"]["edge"]["ipv4_address"])
        subnet = ipaddress.ip_network(COMPOSE["networks"]["edge"]["ipam"]["config"][0]["subnet"])
        assert proxy in subnet
        trusted = Settings(trusted_proxies=_environment("app")["TRUSTED_PROXIES"], _env_file=None).proxy_networks  # type: ignore[call-arg]
        assert trusted == [ipaddress.ip_network(proxy)]
        assert "edge" in SERVICES["app"]["networks"]
        assert [name for name, service in SERVICES.items() if "ports" in service] == ["nginx"]
        assert COMPOSE["networks"]["backend"]["internal"] is True
        for service in ("db", "redis"):
            assert SERVICES[service]["networks"] == ["backend"]

    def test_nginx_is_given_the_tested_files_and_reaches_the_app_where_it_listens(self) -> None:
        mounts = {volume.split(":")[1]: ROOT / volume.split(":")[0] for volume in SERVICES["nginx"]["volumes"]}
        assert mounts["/etc/nginx/conf.d/default.conf"].resolve() == nginx.SITE
        assert mounts["/etc/nginx/ahead"].resolve() == nginx.LOCATIONS.parent
        assert "include /etc/nginx/ahead/locations.conf;" in nginx.SITE.read_text()
        assert "/etc/nginx/certs" in mounts
        command = SERVICES["app"]["command"]
        port = command[command.index("--port") + 1]
        assert f"server app:{port} " in nginx.SITE.read_text()


def test_each_web_process_keeps_the_pool_size_it_is_given(settings: Settings) -> None:
    from app.main import create_app

    if settings.is_sqlite:
        pytest.skip("SQLite has no connection pool to size (DB_POOL_SIZE is for PostgreSQL)")
    app = create_app(settings.model_copy(update={"db_pool_size": 3}))
    try:
        pool = app.state.database.engine.pool
        assert (pool.size(), pool._max_overflow) == (3, 0)  # fixed: never more than max_connections allows
    finally:
        app.state.database.dispose()
