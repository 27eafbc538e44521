"""Browser journeys: a live uvicorn server on a database of its own, driven by Debian's Chromium.

The server runs in a subprocess, so tests cannot roll back what it writes: the `portal` fixture empties
the database before each test instead. Outside CI a missing Chromium, Playwright or axe-core skips the
journeys; with CI=true it fails them, so a green CI run always means the journeys ran.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.config import ROOT
from app.db import Database
from app.migrate import upgrade
from app.models import metadata
from app.roadmap.models import Product, Stage
from tests.conftest import create_database
from tests.factories import password_hash

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
AXE = ROOT / "tests" / "node" / "node_modules" / "axe-core" / "axe.min.js"
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
STAFF_PASSWORD = "journey password 42"
# Kept short: a missing element should fail the journey in seconds, not after Playwright's 30 s default.
TIMEOUT_MS = 10_000


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip outside CI; fail in CI, where no browser journey may be silently skipped."""
    if in_ci():
        pytest.fail(f"{reason} (CI=true: browser journeys must run, not skip)", pytrace=False)
    pytest.skip(reason)


# --- the live server ------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LiveServer:
    url: str
    database: Database
    log_path: Path
    default_stages: list[dict[str, Any]] = field(default_factory=list)

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


def _stage_rows(session: Session) -> list[dict[str, Any]]:
    columns = [c.key for c in Stage.__table__.columns]
    return [
        {key: getattr(stage, key) for key in columns}
        for stage in session.scalars(select(Stage).order_by(Stage.id))
    ]


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with start_live_server(tmp_path_factory.mktemp("live")) as server:
        yield server


@contextmanager
def start_live_server(tmp: Path, *, port: int | None = None, extra_env: dict[str, str] | None = None,
                      workers: int = 1) -> Iterator[LiveServer]:
    """A server on a database of its own. A module whose journeys need other settings (e.g. OIDC_PROVIDERS,
    which must know the server's port in advance) overrides `live_server` with one of these."""
    url, drop = create_database(tmp, "browser")
    database: Database | None = None
    process: subprocess.Popen[bytes] | None = None
    try:
        upgrade(url)
        database = Database(url)
        with database.transaction() as session:
            default_stages = _stage_rows(session)
        port = port or _free_port()
        base = f"http://127.0.0.1:{port}"
        env = {
            **os.environ,
            "DATABASE_URL": url,
            "SECRET_KEY": "browser-journey-secret-" + "k" * 32,
            "BASE_URL": base,
            "AHEAD_ENV": "development",
            "PORT": str(port),
            "PYTHONUNBUFFERED": "1",
            **(extra_env or {}),
        }
        # The in-process rate limiter and cache: a shared Redis would carry state between runs.
        env.pop("REDIS_URL", None)
        log_path = tmp / "server.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory", "--host", "127.0.0.1",
                 "--port", str(port), "--workers", str(workers)],
                cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            )
        server = LiveServer(url=base, database=database, log_path=log_path, default_stages=default_stages)
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"the server exited with {process.returncode}:\n{server.log_tail()}", pytrace=False)
            with suppress(httpx.HTTPError):
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer /healthz within 30 s:\n{server.log_tail()}", pytrace=False)
            time.sleep(0.1)
        yield server
    finally:
        if process is not None:
            _stop(process)
        if database is not None:
            database.dispose()
        drop()


# --- the database, emptied between tests -----------------------------------------------------------


def _empty(database: Database, default_stages: list[dict[str, Any]]) -> None:
    """Delete every row the app wrote (children first) and put the default stages back as they were."""
    with database.transaction() as session:
        for table in reversed(metadata.sorted_tables):
            if table.name != "stages":
                session.execute(table.delete())
        if _stage_rows(session) != default_stages:
            defaults = {row["id"]: row for row in default_stages}
            session.execute(delete(Stage).where(Stage.id.not_in(list(defaults))))
            # Park the slugs first so that restoring them cannot collide with a renamed stage.
            for stage in session.scalars(select(Stage)):
                stage.slug = f"--reset-{stage.id}"
            session.flush()
            present = {stage.id: stage for stage in session.scalars(select(Stage))}
            for stage_id, row in defaults.items():
                if stage_id in present:
                    for key, value in row.items():
                        setattr(present[stage_id], key, value)
                else:
                    session.add(Stage(**row))
            session.flush()


@dataclass
class Portal:
    """The live server plus helpers that write straight to its database."""

    server: LiveServer
    log_offset: int = 0

    @property
    def url(self) -> str:
        return self.server.url

    def server_errors(self) -> str:
        """Tracebacks the server logged since this test started ("" when there were none)."""
        with self.server.log_path.open("rb") as log:
            log.seek(self.log_offset)
            text = log.read().decode(errors="replace")
        return text if "Traceback" in text else ""

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        with self.server.database.transaction() as session:
            yield session

    def create_staff(self, email: str, *, role: Role = Role.pm, password: str = STAFF_PASSWORD,
                     display_name: str = "") -> User:
        with self.transaction() as session:
            return accounts.create_user(session, email=email, role=role, password_hash=password_hash(password),
                                        display_name=display_name or email.split("@")[0].title())

    def create_product(self, name: str, *, slug: str | None = None, description: str = "") -> Product:
        from app.roadmap import service as roadmap

        with self.transaction() as session:
            product = Product(name=name, slug=slug or roadmap.slugify(name), description=description)
            session.add(product)
            session.flush()
            return product


@pytest.fixture
def portal(live_server: LiveServer) -> Iterator[Portal]:
    _empty(live_server.database, live_server.default_stages)
    yield Portal(live_server, log_offset=live_server.log_path.stat().st_size)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keep each phase's report on the test (for failure screenshots) and add the server's log to failures."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    server = getattr(item, "funcargs", {}).get("live_server")
    if report.failed and isinstance(server, LiveServer):
        report.sections.append(("live server log (last lines)", server.log_tail()))
    return report


# --- the browser -----------------------------------------------------------------------------------


# Named apart from pytest-playwright's `browser`/`context`/`new_context`/`page` fixtures, which would
# otherwise take over (and parametrize) these tests with a browser of their own.
@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    if not CHROMIUM.exists():
        unavailable(f"Chromium is not installed at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def _loopback_only(route: Any) -> None:
    if urlparse(route.request.url).hostname == "127.0.0.1":
        route.continue_()
    else:
        route.abort()


@dataclass
class Contexts:
    """Opens isolated browser contexts (one per person) on the live server, and closes them at the end."""

    browser: Any
    base_url: str
    opened: list[Any] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def __call__(self, **options: Any) -> Any:
        # bypass_csp: the app's CSP (rightly) forbids the script injection axe-core needs.
        context = self.browser.new_context(base_url=self.base_url, bypass_csp=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        context.route("**/*", _loopback_only)
        context.on("page", lambda page: page.on("pageerror", lambda exc: self.page_errors.append(str(exc))))
        self.opened.append(context)
        return context

    def close(self, *, failed_test: str | None = None) -> None:
        for n, context in enumerate(self.opened, start=1):
            if failed_test:
                for m, page in enumerate(context.pages, start=1):
                    with suppress(Exception):
                        screenshot(page, f"FAILED-{failed_test}-context{n}-page{m}")
            with suppress(Exception):
                context.close()


@pytest.fixture
def open_context(chromium: Any, portal: Portal, request: pytest.FixtureRequest) -> Iterator[Contexts]:
    """`open_context(**options)` opens a fresh browser context: one per person in the journey."""
    contexts = Contexts(chromium, portal.url)
    yield contexts
    call = getattr(request.node, "report_call", None)
    contexts.close(failed_test=request.node.name if call is not None and call.failed else None)


# --- accessibility and screenshots ---------------------------------------------------------------


def axe_check(page: Any, label: str = "") -> None:
    """Run axe-core's WCAG 2.0/2.1 A and AA rules on the page; fail with one readable line per violation."""
    if not AXE.exists():
        unavailable(f"axe-core is not installed at {AXE} (npm ci --prefix tests/node)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    violations = result["violations"]
    if violations:
        lines = []
        for v in violations:
            targets = [" ".join(map(str, node["target"])) for node in v["nodes"][:3]]
            more = f" (+{len(v['nodes']) - 3} more)" if len(v["nodes"]) > 3 else ""
            summary = " ".join(v["nodes"][0].get("failureSummary", "").split()) if v["nodes"] else ""
            lines.append(f"- {v['id']} [{v['impact']}]: {v['help']} — {', '.join(targets)}{more}. {summary}")
        where = label or page.url
        pytest.fail(f"axe-core found {len(violations)} WCAG 2.1 A/AA violation(s) on {where}:\n"
                    + "\n".join(lines), pytrace=False)


def screenshot(page: Any, name: str) -> Path:
    """Full-page screenshot under test-artifacts/browser/ for humans to look at (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
