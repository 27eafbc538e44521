"""Browser journeys' helpers: Debian's Chromium, a live server's database emptied between tests, isolated
browser contexts (one per person), axe-core checks and screenshots. Outside CI a missing Chromium,
Playwright or axe-core skips the journeys; with CI=true it fails them, so a green CI run always means the
journeys ran."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.config import ROOT
from app.db import Database, utcnow
from app.desk import aggregates
from app.models import metadata
from app.roadmap import service as roadmap
from app.roadmap.models import Product, Stage
from tests.factories import password_hash
from tests.helpers.servers import LiveServer, stage_rows

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    # No name resolves but loopback's (contexts with `browser_cache` have no route to refuse other hosts)
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
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


def empty_database(database: Database, default_stages: list[dict[str, Any]]) -> None:
    """Delete every row the app wrote (children first) and put the default stages back as they were."""
    with database.transaction() as session:
        for table in reversed(metadata.sorted_tables):
            if table.name != "stages":
                session.execute(table.delete())
        if stage_rows(session) != default_stages:
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
        # The desk's state and windows rows are the migration's, not the app's: put them back as a new database has them
        # (without them the triggers count no window and the desk's filters list nothing).
        aggregates.rebuild(session, today=utcnow().date())


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
        with self.transaction() as session:
            product = Product(name=name, slug=slug or roadmap.slugify(name), description=description)
            session.add(product)
            session.flush()
            return product


def loopback_only(route: Any) -> None:
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

    def __call__(self, *, browser_cache: bool = False, **options: Any) -> Any:
        """A new context. Its requests to anywhere but 127.0.0.1 are refused by a route, except with
        `browser_cache`: Playwright turns the browser's HTTP cache off in a context with routes, and a journey
        through Back and Forward needs it as people have it (the host resolver rules above still hold)."""
        # bypass_csp: the app's CSP (rightly) forbids the script injection axe-core needs.
        context = self.browser.new_context(base_url=self.base_url, bypass_csp=True, **options)
        context.set_default_timeout(TIMEOUT_MS)
        if not browser_cache:
            context.route("**/*", loopback_only)
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


def axe_violations(page: Any) -> list[str]:
    """axe-core's WCAG 2.0/2.1 A and AA violations on the page, one readable line each ([] when none)."""
    if not AXE.exists():
        unavailable(f"axe-core is not installed at {AXE} (npm ci --prefix tests/node)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate(
        "tags => axe.run(document, {runOnly: {type: 'tag', values: tags}, resultTypes: ['violations']})",
        AXE_TAGS,
    )
    lines = []
    for v in result["violations"]:
        targets = [" ".join(map(str, node["target"])) for node in v["nodes"][:3]]
        more = f" (+{len(v['nodes']) - 3} more)" if len(v["nodes"]) > 3 else ""
        summary = " ".join(v["nodes"][0].get("failureSummary", "").split()) if v["nodes"] else ""
        lines.append(f"- {v['id']} [{v['impact']}]: {v['help']} — {', '.join(targets)}{more}. {summary}")
    return lines


def axe_check(page: Any, label: str = "") -> None:
    """Run axe-core's WCAG 2.0/2.1 A and AA rules on the page; fail with one readable line per violation."""
    lines = axe_violations(page)
    if lines:
        where = label or page.url
        pytest.fail(f"axe-core found {len(lines)} WCAG 2.1 A/AA violation(s) on {where}:\n" + "\n".join(lines),
                    pytrace=False)


def screenshot(page: Any, name: str) -> Path:
    """Full-page screenshot under test-artifacts/browser/ for humans to look at (gitignored)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
