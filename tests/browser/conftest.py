"""Browser journeys' fixtures: a live uvicorn server on a database of its own, driven by Debian's Chromium.

The server runs in a subprocess, so tests cannot roll back what it writes: the `portal` fixture empties
the database before each test instead. The helpers live in tests/helpers/browser.py and servers.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers.browser import CHROMIUM, CHROMIUM_ARGS, Contexts, Portal, empty_database, unavailable
from tests.helpers.servers import LiveServer, start_live_server


@pytest.fixture(scope="session")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    with start_live_server(tmp_path_factory.mktemp("live")) as server:
        yield server


@pytest.fixture
def portal(live_server: LiveServer) -> Iterator[Portal]:
    empty_database(live_server.database, live_server.default_stages)
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


@pytest.fixture
def open_context(chromium: Any, portal: Portal, request: pytest.FixtureRequest) -> Iterator[Contexts]:
    """`open_context(**options)` opens a fresh browser context: one per person in the journey."""
    contexts = Contexts(chromium, portal.url)
    yield contexts
    call = getattr(request.node, "report_call", None)
    contexts.close(failed_test=request.node.name if call is not None and call.failed else None)
