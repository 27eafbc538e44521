"""Two instances of the portal behind Debian's nginx, sharing PostgreSQL and Redis: is every instance the same portal?

    .venv/bin/python bench/instances.py                      # about a minute
    .venv/bin/python bench/instances.py --duration 30 --kills 2

Not part of CI. What it sets up, all on loopback and all removed at the end:

* a PostgreSQL database of its own (`bench_instances_<pid>` on 127.0.0.1:5432, migrated, dropped afterwards,
  WITH (FORCE)), with one product, `--items` public items taking votes, `--users` customers for the load (each
  signed in with accounts.start_session and given a CSRF cookie and its token, as board.py does), and a few
  people with a password for the checks (a customer, an admin);
* Redis database `--redis-db` (default 9) on 127.0.0.1:6379 for the rate limits; it must hold no `LIMITS*` key
  at the start, and the keys the run made are deleted at the end;
* two instances, A and B: `ahead serve` (TRUSTED_PROXIES=127.0.0.1 lets the app read nginx's X-Forwarded-For),
  `--workers` each, AHEAD_ENV=production, one SECRET_KEY, BASE_URL the nginx address, on ports port+1 and
  port+2, each in its own process group (its access log goes to the instance's log);
* nginx (`apt-get install -y nginx`), a foreground process with its own prefix and configuration in a temporary
  folder, listening on 127.0.0.1:port, with the two instances as its upstream. The locations (timeouts, which
  requests are passed to the other instance, headers) are deploy/nginx/ahead/locations.conf when the repository
  has it, as deployed; otherwise a minimal equivalent written here (the output says which). nginx adds
  X-Upstream ($upstream_addr) to every answer and logs upstream addresses and statuses, so the run knows which
  instance answered and which requests nginx passed on.

The checks (each PASS or FAIL, with its figures):

1. session      a customer signs in with a password on A; B knows the session (/me), and signing out on B ends it
                on A too.
2. csrf         a token from a page A rendered is taken by B for a vote; a wrong token is refused by B (403).
3. vote-pages   B's board and item page, kept in B's page cache (served twice before), show a vote made on A on
                B's very next request, and a withdrawal on B on A's next request.
4. settings     an admin renames the portal and uploads a logo on A; B's next page has the name and B serves the
                logo's bytes.
5. rate-limit   one customer votes and withdraws alternately on A and B, under VOTE_RATE_LIMIT=100/hour: exactly 100
                actions pass, the 101st is refused 429, whichever instance answers it.
6. outbox       a sign-in link asked on A is delivered once, by one instance's worker (the job done, 1 attempt).
7. keep-alive   `--idle-rounds` bursts through nginx, each after an idle pause around uvicorn's default keep-alive
                timeout (4.7 to 5.3 s): no request meets a connection the instance is closing (nginx keeps its
                idle connections to the instances up to 60 s; `ahead serve` keeps them KEEP_ALIVE_SECONDS, 75 s,
                so nginx closes them first). The race is narrow: with `--keep-alive-seconds 5` it shows in some
                runs (a vote answered 502, the instance left out for 10 s), not in every one.
8. kill         `--concurrency` clients drive page reads (board and item pages, visitors and a signed-in customer)
                and votes (distinct customer/item pairs, JSON as static/app.js sends them) through nginx for
                `--duration` seconds; one instance's process group gets SIGKILL mid-load (`--kills` times, B then A
                alternately; each is started again 3 s later, and the next kill waits until nginx sends it
                requests again, so one instance at a time is down). Then:
                - no GET failed: every page read answered 200 (nginx passed the ones the dead instance dropped to
                  the other; how many it passed on is printed);
                - no vote lost: every vote answered 2xx is a row in the database; with `--graceful` (SIGTERM, a
                  deployment's stop) no vote answered with an error at all (nginx passes the vote routes on);
                - a vote that got an error (502: its instance died with it) is either in the database already or
                  not at all, never half: the client sends it again (a vote is idempotent: one per person and item,
                  the second a no-op, the message says which), and afterwards the vote rows are exactly the votes
                  acknowledged;
                - counts exact: every item's vote_count equals COUNT(*) of its vote rows (and voting.reconcile finds
                  no drift), and each item page read through nginx afterwards shows that count.

Prints the load average (1 minute) before and after; the machine is shared, figures are for one run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.cookiejar
import os
import random
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

LOCATIONS = ROOT / "deploy" / "nginx" / "ahead" / "locations.conf"
AGENT = "bench/instances.py"
VOTE_RATE_LIMIT = 100  # per hour: a fresh key counts exactly, with no window boundary inside the check
PASSWORD = "correct horse battery"
IDLE_CLIENTS = 24  # the keep-alive check's burst: more connections than one instance's share of the load uses
CSRF_INPUT = re.compile(r'name="csrf_token" value="([^"]+)"')

# The same retries and headers as deploy/nginx/ahead/locations.conf, for a checkout without it.
MINIMAL_LOCATIONS = """
client_max_body_size 6m;
proxy_connect_timeout 2s;
proxy_send_timeout 30s;
proxy_read_timeout 30s;
# nginx's default, written out: a request whose instance refused or dropped the connection goes to the other,
# except a POST that was already sent (no `non_idempotent`).
proxy_next_upstream error timeout;
proxy_next_upstream_tries 2;
proxy_next_upstream_timeout 5s;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Host $host;
proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
proxy_set_header X-Forwarded-Proto $scheme;
location / {
    proxy_pass http://ahead_app;
}
"""


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"{one:.2f} (5 min {five:.2f}) on {os.cpu_count()} CPUs"


# --- the database ----------------------------------------------------------------------------------------


@dataclass
class Data:
    url: str
    product_path: str
    items: list[tuple[int, str, str]]  # (id, public_id, path), all taking votes
    load_users: list[tuple[int, str, str]]  # (id, cookie header, X-CSRF-Token)
    customer_email: str  # has PASSWORD
    admin_email: str  # has PASSWORD
    limit_user: tuple[int, str, str]  # for the rate-limit check, as load_users
    check_users: list[tuple[int, str, str]]  # for the vote-pages and csrf checks
    idle_users: list[tuple[int, str, str]]  # for the keep-alive check


@contextlib.contextmanager
def own_database(server: str) -> Iterator[str]:
    name = f"bench_instances_{os.getpid()}"
    assert "bench" in name
    admin = create_engine(make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
        print(f"database {name} dropped")


def fill(url: str, secret: str, *, items: int, users: int) -> Data:
    from app import revision
    from app.accounts import service as accounts
    from app.accounts.models import Role
    from app.db import Database
    from app.migrate import upgrade
    from app.security import CsrfTokens
    from tests.factories import make_item, make_product, make_user

    upgrade(url)
    csrf = CsrfTokens(secret)
    database = Database(url)
    revision.track(database)
    tag = secrets.token_hex(3)

    def signed_in(session, user) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
        token = accounts.start_session(session, user=user, user_agent=AGENT)
        cookie = csrf.new_cookie_value()
        return user.id, f"ahead_session={token}; ahead_csrf={cookie}", csrf.form_token(cookie, token)

    try:
        with database.transaction() as session:
            product = make_product(session, name="Bench product", slug="bench")
            made = [make_item(session, product=product, stage_slug=random.choice(["planned", "under-consideration"]),
                              title=f"Bench item {n}") for n in range(items)]
            people = [make_user(session, email=f"load{n}-{tag}@example.com", password=None) for n in range(users)]
            load_users = [signed_in(session, user) for user in people]
            limit_user = signed_in(session, make_user(session, email=f"limit-{tag}@example.com", password=None))
            check_users = [signed_in(session, make_user(session, email=f"check{n}-{tag}@example.com", password=None))
                           for n in range(3)]
            idle_users = [signed_in(session, make_user(session, email=f"idle{n}-{tag}@example.com", password=None))
                          for n in range(IDLE_CLIENTS)]
            customer = make_user(session, email=f"customer-{tag}@example.com")  # PASSWORD
            admin = make_user(session, role=Role.admin, email=f"admin-{tag}@example.com")
            return Data(url=url, product_path="/", items=[(i.id, i.public_id, i.path) for i in made],
                        load_users=load_users, customer_email=customer.email, admin_email=admin.email,
                        limit_user=limit_user, check_users=check_users, idle_users=idle_users)
    finally:
        database.dispose()


def vote_rows(url: str) -> set[tuple[int, int]]:
    from app.db import Database
    from app.voting.models import Vote

    database = Database(url)
    try:
        with database.transaction() as session:
            return {(user_id, item_id) for user_id, item_id in session.execute(select(Vote.user_id, Vote.item_id))}
    finally:
        database.dispose()


def counters(url: str) -> tuple[dict[int, int], dict[int, int], list[str]]:
    """Each item's vote_count, its COUNT(*) of vote rows, and what voting.reconcile(fix=False) finds drifted."""
    from app.db import Database
    from app.roadmap.models import Item
    from app.voting import service as voting
    from app.voting.models import Vote

    database = Database(url)
    try:
        with database.transaction() as session:
            stored = dict(session.execute(select(Item.id, Item.vote_count)).all())
            rows = dict(session.execute(select(Vote.item_id, func.count()).group_by(Vote.item_id)).all())
            drift = [f"{d.public_id}: {d.stored} stored, {d.actual} rows" for d in voting.reconcile(session, fix=False)]
            return stored, {item_id: rows.get(item_id, 0) for item_id in stored}, drift
    finally:
        database.dispose()


def outbox_jobs(url: str) -> list[tuple[str, str, int, str | None]]:
    from app.db import Database
    from app.outbox.models import OutboxJob

    database = Database(url)
    try:
        with database.transaction() as session:
            return [(key, str(getattr(state, "value", state)), attempts, claimed_by) for key, state, attempts, claimed_by
                    in session.execute(select(OutboxJob.key, OutboxJob.state, OutboxJob.attempts,
                                              OutboxJob.claimed_by))]
    finally:
        database.dispose()


# --- processes -------------------------------------------------------------------------------------------


def free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        if not free(port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} not open after {timeout:.0f} s:\n{log.read_text()[-3000:]}")


class Instance:
    """One instance of the portal: `ahead serve` (its access log in the instance's log), in a process group of its
    own."""

    def __init__(self, name: str, port: int, env: dict[str, str], workers: int, folder: Path) -> None:
        self.name, self.port, self.env, self.workers = name, port, env, workers
        self.log_path = folder / f"instance-{name}.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("a") as log:
            log.write(f"--- start {self.starts}\n")
            log.flush()
            self.process = subprocess.Popen(
                [str(Path(sys.executable).parent / "ahead"), "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--workers", str(self.workers)],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self) -> None:
        assert self.process is not None
        wait_port(self.port, self.process, self.log_path)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.base + "/readyz", timeout=5).status_code == 200:
                    return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name}: /readyz not 200:\n{self.log_path.read_text()[-3000:]}")

    def kill(self) -> None:
        """SIGKILL to the whole process group: no shutdown, no finishing of requests in hand."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def freeze(self) -> None:
        """SIGSTOP to the process group: it answers nothing, yet the kernel keeps its sockets open."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGSTOP)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)
        except ProcessLookupError:
            pass


class Nginx:
    def __init__(self, port: int, upstreams: list[Instance], folder: Path) -> None:
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        if not Path(binary).exists():
            sys.exit("nginx is missing: apt-get install -y nginx")
        self.binary, self.port, self.folder = binary, port, folder / "nginx"
        self.folder.mkdir()
        self.deployed = LOCATIONS.exists()
        locations = f"include {LOCATIONS};" if self.deployed else MINIMAL_LOCATIONS
        servers = "".join(f"        server 127.0.0.1:{i.port} max_fails=1 fail_timeout=10s;\n" for i in upstreams)
        d = self.folder
        self.conf = d / "nginx.conf"
        self.conf.write_text(f"""
pid {d}/nginx.pid;
error_log {d}/error.log warn;
daemon off;
worker_processes 1;
events {{ worker_connections 1024; }}
http {{
    log_format upstreams '$request_method $request_uri $status upstream=$upstream_addr statuses=$upstream_status';
    access_log {d}/access.log upstreams;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream ahead_app {{
{servers}        keepalive 32;
    }}
    server {{
        listen 127.0.0.1:{port};
        add_header X-Upstream $upstream_addr always;
        {locations}
    }}
}}
""")
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        checked = subprocess.run([self.binary, "-t", "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                  "-c", str(self.conf)], capture_output=True, text=True, timeout=30, check=False)
        if checked.returncode != 0:
            raise RuntimeError("nginx -t: " + checked.stderr)
        log = self.folder / "stderr.log"
        with log.open("w") as out:
            self.process = subprocess.Popen([self.binary, "-p", str(self.folder), "-e", str(self.folder / "error.log"),
                                             "-c", str(self.conf)], stdout=out, stderr=subprocess.STDOUT,
                                            start_new_session=True)
        wait_port(self.port, self.process, log, timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGQUIT)  # graceful: finish the requests in hand
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)

    def passed_on(self) -> Counter[str]:
        """Requests nginx sent to more than one instance, by method and final status."""
        passed: Counter[str] = Counter()
        for line in (self.folder / "access.log").read_text().splitlines():
            method, _, status, upstream, _ = line.split(" ", 4)
            if "," in upstream:
                passed[f"{method} {status}"] += 1
        return passed


# --- a client that keeps its own cookies ------------------------------------------------------------------


def _no_jar() -> httpx.Cookies:
    """httpx would keep every Set-Cookie for 127.0.0.1 and send it to every port: cookies are kept by hand."""
    return httpx.Cookies(http.cookiejar.CookieJar(policy=http.cookiejar.DefaultCookiePolicy(allowed_domains=[])))


class Browser:
    """One person's cookies, sent to whichever instance (or nginx) is asked; Secure cookies over http too,
    since the instances run with AHEAD_ENV=production behind a plain-http nginx here."""

    def __init__(self, client: httpx.AsyncClient, cookie: str = "") -> None:
        self.client = client
        self.jar: dict[str, str] = dict(part.split("=", 1) for part in cookie.split("; ") if part)

    async def request(self, method: str, url: str, **kwargs) -> httpx.Response:  # type: ignore[no-untyped-def]
        headers = dict(kwargs.pop("headers", {}))
        if self.jar:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.jar.items())
        response = await self.client.request(method, url, headers=headers, **kwargs)
        for line in response.headers.get_list("set-cookie"):
            name, _, rest = line.partition("=")
            value = rest.split(";", 1)[0]
            lowered = line.lower()
            if "max-age=0" in lowered or "expires=thu, 01 jan 1970" in lowered or not value or value == '""':
                self.jar.pop(name, None)
            else:
                self.jar[name] = value
        return response

    async def token(self, url: str) -> str:
        page = await self.request("GET", url)
        found = CSRF_INPUT.search(page.text)
        assert found, f"no CSRF token on {url} ({page.status_code})"
        return found.group(1)


def vote_count(html: str, public_id: str) -> int | None:
    """The count an item page's vote box, or a card's widget, shows."""
    box = re.search(r'<p class="vote-total"><strong>(\d+)</strong>', html)
    if box:
        return int(box.group(1))
    card = re.search(rf'id="vote-{public_id}"[^>]*>\s*<span class="votes"><span aria-hidden="true">▲</span> (\d+)',
                     html)
    return int(card.group(1)) if card else None


JSON_VOTE = {"Accept": "application/json"}


async def json_vote(browser: Browser, base: str, public_id: str, token: str, *, withdraw: bool = False,
                    importance: str = "important") -> httpx.Response:
    path = f"/items/{public_id}/{'unvote' if withdraw else 'vote'}"
    data = {"widget": "card"} if withdraw else {"importance": importance, "widget": "card"}
    return await browser.request("POST", base + path, data=data, headers={**JSON_VOTE, "X-CSRF-Token": token})


# --- the checks ------------------------------------------------------------------------------------------


@dataclass
class Verdict:
    name: str
    ok: bool
    figures: str


def verdict(name: str, ok: bool, figures: str) -> Verdict:
    print(f"{'PASS' if ok else 'FAIL'}  {name:<11} {figures}", flush=True)
    return Verdict(name, ok, figures)


async def check_session(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    person = Browser(client)
    token = await person.token(a.base + "/login")
    signed = await person.request("POST", a.base + "/login",
                                  data={"email": data.customer_email, "password": PASSWORD, "csrf_token": token})
    on_b = await person.request("GET", b.base + "/me")
    known_on_b = on_b.status_code == 200 and data.customer_email in on_b.text
    out_token = await person.token(b.base + "/me")
    out = await person.request("POST", b.base + "/logout", data={"csrf_token": out_token})
    # The old cookie, as someone who copied it before the sign-out would send it to A.
    stale = Browser(client, f"ahead_session={_session_of(signed)}")
    on_a = await stale.request("GET", a.base + "/me")
    ended_on_a = on_a.status_code in (303, 307) and "/login" in on_a.headers.get("location", "")
    return verdict("session", signed.status_code == 303 and known_on_b and out.status_code == 303 and ended_on_a,
                   f"sign-in on A {signed.status_code}; /me on B {on_b.status_code} "
                   f"({'shows' if known_on_b else 'does not show'} the person); sign-out on B {out.status_code}; "
                   f"the old cookie on A {on_a.status_code} → {on_a.headers.get('location', '-')}")


def _session_of(response: httpx.Response) -> str:
    for line in response.headers.get_list("set-cookie"):
        if line.startswith("ahead_session="):
            return line.split(";", 1)[0].split("=", 1)[1]
    return ""


async def check_csrf(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    _, cookie, _ = data.check_users[0]
    person = Browser(client, cookie)
    _, public_id, path = data.items[0]
    token_from_a = await person.token(a.base + path)
    wrong = await json_vote(person, b.base, public_id, token_from_a[:-4] + "0000")
    right = await json_vote(person, b.base, public_id, token_from_a)
    await json_vote(person, a.base, public_id, token_from_a, withdraw=True)
    return verdict("csrf", right.status_code == 200 and wrong.status_code == 403,
                   f"A's token on B: {right.status_code}; a wrong token on B: {wrong.status_code}")


async def check_vote_pages(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    _, cookie, token = data.check_users[1]
    person, visitor = Browser(client, cookie), Browser(client)
    _, public_id, path = data.items[-1]  # the newest: on the board's first screen (the oldest are further down)
    figures, ok = [], True
    for writer, reader, withdraw in ((a, b, False), (b, a, True)):
        pages = {"item page": path, "board": data.product_path}
        before: dict[str, int | None] = {}
        for name, page in pages.items():
            for _ in range(2):  # the second is served from the reader's page cache
                seen = await visitor.request("GET", reader.base + page)
            before[name] = vote_count(seen.text, public_id)
        sent = await json_vote(person, writer.base, public_id, token, withdraw=withdraw)
        for name, page in pages.items():
            after = vote_count((await visitor.request("GET", reader.base + page)).text, public_id)
            was = before[name]
            ok &= sent.status_code == 200 and was is not None and after == was + (-1 if withdraw else 1)
            figures.append(f"{'withdrawal' if withdraw else 'vote'} on {writer.name} ({sent.status_code}), {name} on "
                           f"{reader.name}: {before[name]} → {after}")
    return verdict("vote-pages", ok, "; ".join(figures))


async def check_settings(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    admin = Browser(client)
    token = await admin.token(a.base + "/login")
    signed = await admin.request("POST", a.base + "/login",
                                 data={"email": data.admin_email, "password": PASSWORD, "csrf_token": token})
    visitor = Browser(client)
    for _ in range(2):
        await visitor.request("GET", b.base + "/")
    name = f"Portal {secrets.token_hex(3)}"
    logo = b"GIF89a\x01\x00\x01\x00\x80\x00\x00\x00\x00\x00\xff\xff\xff!\xf9\x04\x01\x00\x00\x00\x00,\x00\x00\x00\x00" \
           b"\x01\x00\x01\x00\x00\x02\x02D\x01\x00;"
    form_token = await admin.token(a.base + "/admin/settings")
    saved = await admin.request("POST", a.base + "/admin/settings",
                                data={"csrf_token": form_token, "portal_name": name, "accent_color": "#4f46e5"},
                                files={"logo": ("logo.gif", logo, "image/gif")})
    page = await visitor.request("GET", b.base + "/")
    served = await visitor.request("GET", b.base + "/branding/logo")
    shown = name in page.text
    same = served.status_code == 200 and served.content == logo
    return verdict("settings", signed.status_code == 303 and saved.status_code == 303 and shown and same,
                   f"admin sign-in on A {signed.status_code}, settings saved on A {saved.status_code}; B's next board "
                   f"{'shows' if shown else 'does not show'} the new name; B serves the logo "
                   f"{served.status_code}, {'the same' if same else 'other'} {len(served.content)} bytes")


async def check_rate_limit(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    _, cookie, token = data.limit_user
    person = Browser(client, cookie)
    _, public_id, _ = data.items[2]
    passed: Counter[str] = Counter()
    refused: Counter[str] = Counter()
    first_refusal = None
    for n in range(VOTE_RATE_LIMIT + 5):
        instance = (a, b)[n % 2]
        answer = await json_vote(person, instance.base, public_id, token, withdraw=n % 4 >= 2)
        if answer.status_code == 200:
            passed[instance.name] += 1
        elif answer.status_code == 429:
            refused[instance.name] += 1
            first_refusal = first_refusal if first_refusal is not None else n + 1
        else:
            refused[f"{instance.name} {answer.status_code}"] += 1
    total = sum(passed.values())
    ok = total == VOTE_RATE_LIMIT and first_refusal == VOTE_RATE_LIMIT + 1 and sum(refused.values()) == 5
    return verdict("rate-limit", ok,
                   f"{VOTE_RATE_LIMIT}/hour per person: {total} passed (A {passed['A']}, B {passed['B']}), "
                   f"first refusal at action {first_refusal}, refused {dict(refused)}")


async def check_outbox(client: httpx.AsyncClient, a: Instance, b: Instance, data: Data) -> Verdict:
    person = Browser(client)
    token = await person.token(a.base + "/login/email")
    asked = await person.request("POST", a.base + "/login/email",
                                 data={"link_email": data.customer_email, "csrf_token": token})
    deadline, jobs = time.monotonic() + 15, []
    while time.monotonic() < deadline:
        jobs = [job for job in outbox_jobs(data.url) if "magic_link:" in job[0]]
        if jobs and all(state != "pending" for _, state, _, _ in jobs):
            break
        await asyncio.sleep(0.25)
    done = [job for job in jobs if job[1] == "done"]
    ok = asked.status_code == 303 and len(jobs) == 1 and len(done) == 1 and done[0][2] == 1
    return verdict("outbox", ok, f"link asked on A {asked.status_code}; its email job: "
                                 f"{', '.join(f'{state} after {n} attempt(s)' for _, state, n, _ in jobs) or 'none'} "
                                 "(two instances' workers claim from one queue)")


async def check_keep_alive(client: httpx.AsyncClient, nginx: Nginx, data: Data, rounds: int) -> Verdict:
    """Bursts through nginx separated by idle pauses around uvicorn's keep-alive timeout (5 s unless `ahead serve`
    sets another): nginx keeps its idle connections to the instances (`keepalive`, up to 60 s), so a request it
    sends on one the instance is just closing meets a reset. A GET is then passed to the other instance (and
    the first is left out for fail_timeout); a POST is answered 502."""
    base = f"http://127.0.0.1:{nginx.port}"
    log = nginx.folder / "error.log"
    start = log.stat().st_size
    answers: Counter[str] = Counter()
    for r in range(rounds):
        burst = [client.get(base + path) for _, _, path in (data.items * 2)[:IDLE_CLIENTS]]
        answers.update(f"GET {a.status_code}" for a in await asyncio.gather(*burst))
        await asyncio.sleep(4.7 + 0.6 * r / max(1, rounds - 1))  # 4.7 s to 5.3 s
        _, public_id, _ = data.items[r % len(data.items)]
        votes = [json_vote(Browser(client, cookie), base, public_id, token) for _, cookie, token in data.idle_users]
        answers.update(f"POST {a.status_code}" for a in await asyncio.gather(*votes))
    with log.open() as errors:
        errors.seek(start)
        lines = errors.read().splitlines()
    resets = sum(1 for line in lines if "reset by peer" in line or "prematurely closed" in line)
    disabled = sum(1 for line in lines if "temporarily disabled" in line)
    failed = sum(n for answer, n in answers.items() if not answer.endswith((" 200",)))
    return verdict("keep-alive", failed == 0 and resets == 0,
                   f"{rounds} bursts of {IDLE_CLIENTS} GETs, then {IDLE_CLIENTS} votes after 4.7–5.3 s idle: "
                   f"{dict(answers)}; nginx saw {resets} connection(s) reset or closed under a request, "
                   f"left an instance out {disabled} time(s)")


# --- the load, and the kill ------------------------------------------------------------------------------


@dataclass
class Tally:
    gets: Counter[str] = field(default_factory=Counter)  # status (or exception name)
    by_upstream: Counter[str] = field(default_factory=Counter)
    votes: Counter[str] = field(default_factory=Counter)
    acknowledged: set[tuple[int, int]] = field(default_factory=set)
    failed: list[tuple[int, str, str, int, str]] = field(default_factory=list)  # user, cookie, token, item, public
    failed_statuses: Counter[str] = field(default_factory=Counter)
    failed_at: list[float] = field(default_factory=list)  # time.monotonic() of each error answer to a vote
    get_failures: list[str] = field(default_factory=list)


async def drive(client: httpx.AsyncClient, nginx: str, data: Data, *, concurrency: int, duration: float,
                tally: Tally, stop: asyncio.Event) -> None:
    pairs = [(user, item) for user in data.load_users for item in data.items]
    random.shuffle(pairs)
    reader_cookie = data.check_users[2][1]
    paths = [path for _, _, path in data.items] + ["/"] * 5

    async def one(n: int) -> None:
        visitor, customer = Browser(client), Browser(client, reader_cookie)
        while not stop.is_set():
            if random.random() < 0.3 and pairs:
                (user_id, cookie, token), (item_id, public_id, _) = pairs.pop()
                try:
                    answer = await json_vote(Browser(client, cookie), nginx, public_id, token)
                    status = str(answer.status_code)
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                tally.votes[status] += 1
                if status.startswith("2"):
                    tally.acknowledged.add((user_id, item_id))
                else:
                    tally.failed.append((user_id, cookie, token, item_id, public_id))
                    tally.failed_statuses[status] += 1
                    tally.failed_at.append(time.monotonic())
            else:
                path = random.choice(paths)
                reader = customer if random.random() < 0.2 else visitor
                try:
                    answer = await reader.request("GET", nginx + path)
                    status = str(answer.status_code)
                    tally.by_upstream[answer.headers.get("x-upstream", "-")] += 1
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                tally.gets[status] += 1
                if status != "200":
                    tally.get_failures.append(f"{path} {status}")

    await asyncio.gather(*(one(n) for n in range(concurrency)))


async def check_kill(client: httpx.AsyncClient, nginx: Nginx, instances: list[Instance], data: Data,
                     args: argparse.Namespace) -> list[Verdict]:
    base = f"http://127.0.0.1:{nginx.port}"
    tally, stop = Tally(), asyncio.Event()
    started = time.monotonic()
    load = asyncio.create_task(drive(client, base, data, concurrency=args.concurrency, duration=args.duration,
                                     tally=tally, stop=stop))
    kills, killed_at = [], []
    # Load for a step, kill, restart, and only once nginx sends requests to the restarted instance again the
    # next step begins: one instance at a time is down, never both.
    step = args.duration / (args.kills + 1)
    for k in range(args.kills):
        await asyncio.sleep(step)
        victim = instances[1 - k % 2]
        before = sum(tally.gets.values()) + sum(tally.votes.values())
        if args.hang:
            # A hung instance (a machine gone without closing its sockets): its connections stay open, unanswered.
            victim.freeze()
            print(f"  SIGSTOP {victim.name} at {time.monotonic() - started:.1f} s for {args.hang:g} s", flush=True)
            await asyncio.sleep(args.hang)
        if args.graceful:
            # A deployment's stop: SIGTERM, the instance finishes what it has in hand and closes its connections
            await asyncio.to_thread(victim.stop)
        else:
            victim.kill()
        killed_at.append(time.monotonic())
        kills.append(f"{victim.name} at {time.monotonic() - started:.1f} s (after {before} requests)")
        print(f"  {'SIGTERM' if args.graceful else 'SIGKILL'} {kills[-1]}", flush=True)
        await asyncio.sleep(3)
        victim.start()
        await asyncio.to_thread(victim.wait_ready)
        back = await back_in_rotation(client, base, victim)
        print(f"  {victim.name} started again, ready at {back - started:.1f} s and answering through nginx", flush=True)
    await asyncio.sleep(step)
    stop.set()
    await load
    elapsed = time.monotonic() - started
    gets, votes = sum(tally.gets.values()), sum(tally.votes.values())
    print(f"  load: {gets} page reads ({gets / elapsed:.0f}/s), {votes} votes ({votes / elapsed:.0f}/s) in "
          f"{elapsed:.1f} s with {args.concurrency} clients; answered by {dict(tally.by_upstream)}; "
          f"load average {load_avg_one():.2f}", flush=True)
    passed_on = nginx.passed_on()
    verdicts = [verdict("kill: GETs", tally.gets.get("200", 0) == gets and gets > 0,
                        f"{tally.gets.get('200', 0)} of {gets} page reads answered 200 {dict(tally.gets)}; "
                        f"passed on by nginx to the other instance: {dict(passed_on) or 'none'}; "
                        f"kills: {'; '.join(kills)}"
                        + (f"; failures {tally.get_failures[:5]}" if tally.get_failures else ""))]

    # Votes: an error answer is in the database or not at all; the client sends it again.
    # An error answer to a vote is expected only from the instance that died: within a second of a kill.
    near_kill = sum(1 for at in tally.failed_at if any(0 <= at - k <= 1.0 for k in killed_at))
    rows = vote_rows(data.url)
    load_ids = {user_id for user_id, _, _ in data.load_users}
    lost = {pair for pair in tally.acknowledged if pair not in rows}
    failed_in_db = sum(1 for user_id, _, _, item_id, _ in tally.failed if (user_id, item_id) in rows)
    again: Counter[str] = Counter()
    counted_before = 0
    for user_id, cookie, token, item_id, public_id in tally.failed:
        answer = await json_vote(Browser(client, cookie), base, public_id, token)
        again[str(answer.status_code)] += 1
        if answer.status_code == 200:
            tally.acknowledged.add((user_id, item_id))
            counted_before += "is now" in answer.json().get("message", "")
    rows = vote_rows(data.url)
    load_rows = {pair for pair in rows if pair[0] in load_ids}
    extra = load_rows - tally.acknowledged
    still_missing = tally.acknowledged - load_rows
    verdicts.append(verdict(
        "kill: votes", not lost and not extra and not still_missing and again.get("200", 0) == len(tally.failed)
        and near_kill == len(tally.failed) and not (args.graceful and tally.failed),
        f"{votes} votes sent: {dict(tally.votes)}; acknowledged 2xx and not in the database: {len(lost)}; "
        f"answered with an error: {len(tally.failed)} {dict(tally.failed_statuses)} ({near_kill} within 1 s of a "
        f"kill), of which {failed_in_db} were "
        f"in the database already; sent again: {dict(again)} ({counted_before} said the vote was already counted); "
        f"vote rows {len(load_rows)} = votes acknowledged {len(tally.acknowledged)}: "
        f"{'yes' if not extra and not still_missing else f'no ({len(extra)} extra, {len(still_missing)} missing)'}"))

    stored, actual, drift = counters(data.url)
    off = {item_id: (stored[item_id], actual[item_id]) for item_id in stored if stored[item_id] != actual[item_id]}
    shown_off = []
    visitor = Browser(client)
    for item_id, public_id, path in data.items:
        page = await visitor.request("GET", base + path)
        shown = vote_count(page.text, public_id)
        if shown != actual[item_id]:
            shown_off.append(f"{public_id}: page {shown}, rows {actual[item_id]}")
    verdicts.append(verdict("counts", not off and not drift and not shown_off,
                            f"{len(stored)} items, {sum(actual.values())} vote rows; vote_count ≠ COUNT(*): {len(off)}"
                            f"{' ' + str(off) if off else ''}; reconcile drift: {len(drift)}; item pages through nginx "
                            f"showing another count: {len(shown_off)} {shown_off[:5] if shown_off else ''}"))
    return verdicts


async def back_in_rotation(client: httpx.AsyncClient, base: str, instance: Instance, timeout: float = 60) -> float:
    """When nginx sends a request to `instance` again (it leaves a failed server alone for fail_timeout, 10 s)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answer = await client.get(base + "/healthz")
        if answer.headers.get("x-upstream", "").endswith(f":{instance.port}"):
            return time.monotonic()
        await asyncio.sleep(0.2)
    raise RuntimeError(f"nginx did not send to {instance.name} again within {timeout:.0f} s")


def load_avg_one() -> float:
    return os.getloadavg()[0]


# --- main ------------------------------------------------------------------------------------------------


def redis_keys(redis_url: str) -> list[bytes]:
    import redis

    return list(redis.Redis.from_url(redis_url).scan_iter(match="LIMITS*", count=1000))


def clean_redis(redis_url: str) -> int:
    import redis

    client = redis.Redis.from_url(redis_url)
    keys = list(client.scan_iter(match="LIMITS*", count=1000))
    if keys:
        client.delete(*keys)
    return len(keys)


async def run(args: argparse.Namespace, data: Data, instances: list[Instance], nginx: Nginx) -> list[Verdict]:
    a, b = instances
    limits = httpx.Limits(max_connections=args.concurrency + 8, max_keepalive_connections=args.concurrency + 8)
    async with httpx.AsyncClient(cookies=_no_jar(), timeout=60, limits=limits, follow_redirects=False) as client:
        verdicts = [
            await check_session(client, a, b, data),
            await check_csrf(client, a, b, data),
            await check_vote_pages(client, a, b, data),
            await check_settings(client, a, b, data),
            await check_rate_limit(client, a, b, data),
            await check_outbox(client, a, b, data),
        ]
        if args.idle_rounds:
            verdicts.append(await check_keep_alive(client, nginx, data, args.idle_rounds))
        print(f"kill: {args.duration:.0f} s of load through nginx, {args.kills} "
              f"{'SIGTERM' if args.graceful else 'SIGKILL'}(s)", flush=True)
        verdicts += await check_kill(client, nginx, instances, data, args)
    return verdicts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--server", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
                        help="the PostgreSQL server (a database of this run's own is made on it and dropped)")
    parser.add_argument("--redis-db", type=int, default=9, help="Redis database number on 127.0.0.1:6379")
    parser.add_argument("--port", type=int, default=9151, help="nginx's port; the instances take the next two")
    parser.add_argument("--workers", type=int, default=1, help="uvicorn workers per instance")
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--users", type=int, default=300, help="customers for the vote load")
    parser.add_argument("--concurrency", type=int, default=16, help="clients of the load")
    parser.add_argument("--duration", type=float, default=20, help="seconds of load (at most 300)")
    parser.add_argument("--kills", type=int, default=1, help="SIGKILLs during the load (B, then A, ...)")
    parser.add_argument("--graceful", action="store_true",
                        help="stop the instance with SIGTERM instead (a deployment's stop): then no vote may come "
                             "back with an error at all (nginx retries the vote routes, deploy/nginx)")
    parser.add_argument("--idle-rounds", type=int, default=8,
                        help="bursts of the keep-alive check (about 5 s each; 0 leaves it out)")
    parser.add_argument("--hang", type=float, default=0,
                        help="seconds each victim is stopped (SIGSTOP: hung, sockets open) before its SIGKILL; "
                             "not one of the checks above: a hung instance costs requests (bench/README.md)")
    parser.add_argument("--keep-alive-seconds", type=int,
                        help="KEEP_ALIVE_SECONDS for the instances (default: the app's; 5 is uvicorn's own)")
    parser.add_argument("--logs", type=Path, help="copy the instances' and nginx's logs into this folder")
    args = parser.parse_args()
    args.duration = max(5.0, min(args.duration, 300.0))
    for port in (args.port, args.port + 1, args.port + 2):
        if port in (80, 8000) or not free(port):
            sys.exit(f"port {port} is taken (or reserved)")
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    if redis_keys(redis_url):
        sys.exit(f"{redis_url} already holds LIMITS* keys: another run? pick another --redis-db")
    print(f"load average {load()} at the start")
    secret = secrets.token_urlsafe(48)
    verdicts: list[Verdict] = []
    with own_database(args.server) as url, tempfile.TemporaryDirectory(prefix="ahead-instances-") as tmp:
        folder = Path(tmp)
        data = fill(url, secret, items=args.items, users=args.users)
        env = {**os.environ, "DATABASE_URL": url, "AHEAD_ENV": "production", "SECRET_KEY": secret,
               "BASE_URL": f"http://127.0.0.1:{args.port}", "REDIS_URL": redis_url, "TRUSTED_PROXIES": "127.0.0.1",
               "VOTE_RATE_LIMIT": f"{VOTE_RATE_LIMIT}/hour", "VOTE_IP_RATE_LIMIT": "1000000/hour",
               "PYTHONPATH": str(ROOT)}
        env.pop("SMTP_URL", None)  # emails go to the log
        if args.keep_alive_seconds:
            env["KEEP_ALIVE_SECONDS"] = str(args.keep_alive_seconds)
        instances = [Instance(name, args.port + n + 1, env, args.workers, folder) for n, name in enumerate("AB")]
        nginx = Nginx(args.port, instances, folder)
        try:
            for instance in instances:
                instance.start()
            for instance in instances:
                instance.wait_ready()
            nginx.start()
            print(f"instances A :{instances[0].port} and B :{instances[1].port} ({args.workers} worker(s) each), "
                  f"nginx :{args.port} with "
                  f"{'deploy/nginx/ahead/locations.conf' if nginx.deployed else 'the minimal locations in this script'}"
                  f"; KEEP_ALIVE_SECONDS {env.get('KEEP_ALIVE_SECONDS', 'default')}; PostgreSQL {make_url(url).database}, Redis db {args.redis_db}; {len(data.items)} items, "
                  f"{len(data.load_users)} customers for the load", flush=True)
            verdicts = asyncio.run(run(args, data, instances, nginx))
        finally:
            nginx.stop()
            for instance in instances:
                instance.stop()
            if args.logs:
                args.logs.mkdir(parents=True, exist_ok=True)
                for log in [*folder.glob("instance-*.log"), *nginx.folder.glob("*.log")]:
                    shutil.copy(log, args.logs / log.name)
            removed = clean_redis(redis_url)
            print(f"Redis: {removed} rate-limit keys removed from db {args.redis_db}")
            errors = [line for instance in instances for line in instance.log_path.read_text().splitlines()
                      if "Traceback" in line or " ERROR " in line or "ERROR:" in line]
            if errors:
                print(f"instance logs: {len(errors)} error lines, first: {errors[:3]}")
    print(f"load average {load()} at the end")
    failed = [v.name for v in verdicts if not v.ok]
    print(f"\n{len(verdicts) - len(failed)} of {len(verdicts)} checks passed" + (f"; FAILED: {failed}" if failed else ""))
    sys.exit(1 if failed or not verdicts else 0)


if __name__ == "__main__":
    main()
