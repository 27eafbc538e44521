"""A real OpenID Connect provider for the suite: `node tests/node/oidc-provider.mjs` on a loopback port.

`run_provider(...)` starts it and waits for its discovery document; `ProviderBrowser` walks its own
login and consent forms over plain HTTP the way a person would. Outside CI a missing Node or
oidc-provider skips the tests; with CI=true it fails them.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Self
from urllib.parse import urljoin

import httpx
import pytest

from app.config import ROOT
from tests.helpers.servers import free_port

SCRIPT = ROOT / "tests" / "node" / "oidc-provider.mjs"
PACKAGE = ROOT / "tests" / "node" / "node_modules" / "oidc-provider"
CLIENT_SECRET = "oidc-test-client-secret-0123456789"


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
        pytest.fail(f"{reason} (CI=true: the OpenID provider tests must run, not skip)", pytrace=False)
    pytest.skip(reason)


@dataclass
class RunningProvider:
    issuer: str
    port: int
    client_id: str
    client_secret: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def config(self, name: str = "test", label: str = "Acme SSO", *, issuer: str | None = None,
               scopes: str = "openid email profile groups") -> dict[str, str]:
        """One OIDC_PROVIDERS entry for this provider."""
        return {"name": name, "label": label, "issuer": issuer or self.issuer, "client_id": self.client_id,
                "client_secret": self.client_secret, "scopes": scopes}

    def tamper(self, *, claims: dict[str, Any] | None = None, sign: str = "provider", drop: bool = False) -> None:
        """Make the provider's next token response carry a forged ID token, or none (see the script's header)."""
        response = httpx.post(f"http://127.0.0.1:{self.port}/__test__/tamper",
                              json={"claims": claims or {}, "sign": sign, "drop": drop}, timeout=5)
        assert response.status_code == 204, response.text

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)


@contextmanager
def run_provider(log_dir: Path, *, redirect_uris: list[str], client_id: str = "ahead-test",
                 issuer: str | None = None) -> Iterator[RunningProvider]:
    node = shutil.which("node")
    if node is None:
        _unavailable("Node.js is not installed")
    if not PACKAGE.exists():
        _unavailable(f"oidc-provider is not installed in {PACKAGE.parent} (npm ci --prefix tests/node)")
    port = free_port()
    log_path = log_dir / f"oidc-provider-{port}.log"
    env = {**os.environ, "PORT": str(port), "CLIENT_ID": client_id, "CLIENT_SECRET": CLIENT_SECRET,
           "REDIRECT_URIS": " ".join(redirect_uris), "NODE_ENV": "test"}
    if issuer:
        env["ISSUER"] = issuer
    with log_path.open("wb") as log:
        process = subprocess.Popen([node, str(SCRIPT)], cwd=SCRIPT.parent, env=env, stdout=log,
                                   stderr=subprocess.STDOUT)
    provider = RunningProvider(issuer=issuer or f"http://127.0.0.1:{port}", port=port, client_id=client_id,
                               client_secret=CLIENT_SECRET, process=process, log_path=log_path)
    try:
        deadline = time.monotonic() + 30
        discovery = f"http://127.0.0.1:{port}/.well-known/openid-configuration"
        with httpx.Client(timeout=1) as poller:
            while True:
                if process.poll() is not None:
                    pytest.fail(f"oidc-provider exited with {process.returncode}:\n{provider.log()}",
                                pytrace=False)
                with suppress(httpx.HTTPError):
                    if poller.get(discovery).status_code == 200:
                        break
                if time.monotonic() > deadline:
                    pytest.fail(f"oidc-provider did not answer {discovery} within 30 s:\n{provider.log()}",
                                pytrace=False)
                time.sleep(0.05)
        yield provider
    finally:
        provider.stop()


# --- a person at the provider's own forms, over HTTP ------------------------------------------------


class _Forms(HTMLParser):
    """The forms (action, fields) and links of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.links: dict[str, str] = {}
        self._href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            self.forms.append({"action": a.get("action", ""), "method": a.get("method", "get").lower(),
                               "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = a.get("value", "")
        elif tag == "a":
            self._href = a.get("href")

    def handle_data(self, data: str) -> None:
        if self._href is not None and data.strip():
            self.links[data.strip()] = self._href

    def handle_endtag(self, tag: str) -> None:
        if tag == "a":
            self._href = None


def parse_page(html: str) -> _Forms:
    parser = _Forms()
    parser.feed(html)
    return parser


class ProviderBrowser:
    """Follows the provider's redirects and fills its forms; stops at the first URL off the provider."""

    def __init__(self, provider: RunningProvider) -> None:
        self.provider = provider
        self.http = httpx.Client(timeout=10, follow_redirects=False)
        self.pages: list[str] = []

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _on_provider(self, url: str) -> bool:
        return url.startswith(f"http://127.0.0.1:{self.provider.port}/")

    def _follow(self, response: httpx.Response) -> tuple[httpx.Response | None, str | None]:
        """Follow redirects on the provider; returns (page, None), or (None, url) once it sends us away."""
        for _ in range(10):
            if not response.is_redirect:
                assert response.status_code == 200, f"{response.status_code} from the provider: {response.text[:500]}"
                self.pages.append(response.text)
                return response, None
            url = urljoin(str(response.url), response.headers["location"])
            if not self._on_provider(url):
                return None, url
            response = self.http.get(url)
        raise AssertionError("too many redirects at the provider")

    def _submit(self, page: httpx.Response, fields: dict[str, str]) -> tuple[httpx.Response | None, str | None]:
        forms = parse_page(page.text).forms
        assert forms, f"no form on the provider's page: {page.text[:500]}"
        form = forms[0]
        response = self.http.post(urljoin(str(page.url), form["action"]), data={**form["fields"], **fields})
        return self._follow(response)

    def sign_in(self, authorize_url: str, login: str, password: str = "any password") -> str:
        """Log in and consent at the provider; returns the URL it finally sends the browser to."""
        assert self._on_provider(authorize_url), authorize_url
        page, away = self._follow(self.http.get(authorize_url))
        for _ in range(4):
            if away is not None:
                return away
            assert page is not None
            fields = parse_page(page.text).forms[0]["fields"] if parse_page(page.text).forms else {}
            if fields.get("prompt") == "login":
                page, away = self._submit(page, {"login": login, "password": password})
            else:  # consent: "Continue"
                page, away = self._submit(page, {})
        raise AssertionError("the provider never sent the browser back")

    def cancel(self, authorize_url: str) -> str:
        """Open the provider's login form and press its "Cancel" link; returns where it sends the browser."""
        page, away = self._follow(self.http.get(authorize_url))
        assert page is not None and away is None
        href = parse_page(page.text).links["[ Cancel ]"]
        _, away = self._follow(self.http.get(urljoin(str(page.url), href)))
        assert away is not None
        return away


def providers_env(*entries: dict[str, str]) -> str:
    return json.dumps(list(entries))
