"""The browser journey in this folder runs on the live server and Chromium of tests/browser."""

from tests.browser.conftest import chromium, live_server, open_context, portal  # noqa: F401
