"""Load-test the public pages of a generated database with wrk, each against a reference serving its very bytes.

    .venv/bin/python bench/generate.py /tmp/ahead-bench.db            # once (a few minutes)
    .venv/bin/python bench/board.py /tmp/ahead-bench.db
    .venv/bin/python bench/board.py postgresql://postgres@127.0.0.1:5432/bench_ahead

Starts the real app (uvicorn, 2 workers, no access log, AHEAD_ENV=production as deployed, a throwaway SECRET_KEY)
and fetches every page it will measure, per audience; then starts the two references of bench/reference_app.py
(2 workers each) with those exact bytes — a bare FastAPI route and a raw ASGI app — and runs
`wrk -t2 -c64 -d10s --latency` (after a short warm-up each) against the references and the app in turn, page by
page:

  board, visitor   /  signed out, no cookie at all (what a first visit, a crawler or a CDN sends)
  board, customer  /  with the session cookie of a generated customer of an organisation with a segment
                   (a session made with app.accounts.service.start_session) and a CSRF cookie, as a browser
                   holds them
  now/next/later   /?view=horizon, signed out
  item page        /items/<id>/<slug>, cycling through the items on the board (a wrk Lua script)
  search           /search?q=<prefix>, cycling through common one- and two-word prefixes
  search, distinct /search?q=..., a query that never repeats in the run (one- and two-word prefixes of the data
                   set's own title words, each query once across all wrk threads and its warm-up): every request
                   is a search the app has not kept; no reference (it would need every page's bytes)
  vote/unvote      (--votes, or --only-votes without the pages) 400 distinct customers, each signed in
                   with start_session and given a CSRF cookie and its token, POST /items/<id>/vote and
                   /unvote the way static/app.js does (form body, X-CSRF-Token, Accept: application/json)
                   over the board's votable items, spread by a wrk Lua script; run with the vote rate
                   limits raised through VOTE_RATE_LIMIT / VOTE_IP_RATE_LIMIT (printed). Afterwards every
                   items.vote_count is checked against its vote rows, and what the load left is withdrawn
                   through the voting service, so the data set is as generated again.
  vote reference   (with the vote load) the same wrk script against bench/reference_vote.py, a bare FastAPI
                   endpoint doing the portal's vote writes and nothing else, before and after the portal's
                   run, each checked and cleaned up the same way; the portal's vote figure is reported as a
                   ratio to their mean with p50/p99 (issue 13: ≥ 0.7 and ≥ 1,000 req/s on PostgreSQL)

For each page: req/s, p50 and p99 of the app and of both references, the ratio of the app's req/s to bare
FastAPI's (measured just before it: absolute figures drift on a shared 2-core machine, where wrk itself takes
part of the CPU), and PASS/MISS against issue 13's targets. Any non-2xx/3xx answer or socket error is reported,
and a line with errors never passes. Servers are stopped at the end whatever happens (each in its own process
group). Traffic goes to 127.0.0.1 only; every run is time-bounded.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select
from sqlalchemy.engine import make_url

from bench.generate import database_url

SEARCHES = ["rep", "sch", "exp", "int", "dash", "time off", "slack integ", "payroll ex"]


@dataclass(frozen=True)
class Target:
    ratio: float | None = None  # req/s as a share of bare FastAPI serving the same bytes: the target
    tail: float | None = None  # p99 at most this many times the page's own p50
    p99_ms: float | None = None
    of_visitor: float | None = None  # req/s as a share of the visitor's board (the customer's board)


# Issue 13, "Speed and scale": the same on SQLite and PostgreSQL.
TARGETS = {
    "board, visitor": Target(ratio=0.6, tail=3.0),
    "board, 304": Target(ratio=0.8),  # a conditional GET with the matching ETag, against bare FastAPI's 304
    "now/next/later": Target(ratio=0.6, tail=3.0),
    "item page": Target(ratio=0.6, tail=3.0),
    "board, customer": Target(of_visitor=0.5),
    "search": Target(p99_ms=150),
    "search, distinct": Target(p99_ms=150),
    "vote/unvote": Target(),  # ≥ 0.7 of the vote reference and ≥ 1,000/s on PostgreSQL: vote_report()
}


@dataclass(frozen=True)
class Measured:
    """One page as wrk requests it: a path (or a Lua script cycling through paths) and maybe a cookie."""

    name: str
    paths: list[str]
    cookie: str | None = None
    # Sent with the ETag the page answered (If-None-Match): what a browser or CDN revalidating it sends; the app
    # and the references answer 304 with no body.
    etag: str | None = None

    @property
    def audience(self) -> str:
        from bench.reference_app import CUSTOMER, VISITOR, revalidating

        audience = CUSTOMER if self.cookie else VISITOR
        return revalidating(audience) if self.etag else audience

    @property
    def header(self) -> str | None:
        return f"Cookie: {self.cookie}" if self.cookie else f"If-None-Match: {self.etag}" if self.etag else None


@dataclass
class Result:
    name: str
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int
    load: float
    output: str = ""  # wrk's own report
    exact: bool | None = None  # the vote load: every counter equal to its vote rows afterwards


# --- servers -------------------------------------------------------------------------------------------


class Server:
    """A uvicorn process group; stop() ends the whole group (master and workers)."""

    # The event loop of every server a run starts, the app's and the references' alike: `ahead serve`'s
    # (app/cli.py, uvloop accepting every waiting connection at once) unless --loop says otherwise.
    loop = "app.serving:new_event_loop"

    def __init__(self, name: str, app: str, port: int, env: dict[str, str], workers: int, log_dir: Path) -> None:
        self.name, self.port = name, port
        self.log_path = log_dir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", app, "--factory", "--host", "127.0.0.1", "--port", str(port),
             "--workers", str(workers), "--loop", Server.loop, "--no-access-log", "--log-level", "warning",
             # uvicorn's supervisor kills a worker that misses its ping for 5 s: under wrk on a loaded machine a
             # busy worker did, and its connections hung until wrk's timeout (as `ahead serve`, app/cli.py)
             "--timeout-worker-healthcheck", "60"],
            cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def wait_ready(self, path: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.log_path.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(self.base + path, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.3)
        raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
            except ProcessLookupError:
                pass
        self.log.close()


def keeps_alive(server: Server, path: str, header: str | None = None) -> None:
    """wrk keeps its connections open; a server answering `Connection: close` would have it open one per request,
    a TCP handshake more per request than a server that does not: no comparison. Two requests on one connection,
    as wrk sends them (with the page's `header`, "Name: value"), and neither answer may say it closes."""
    headers: dict[str, str] = {}
    if header:
        name, value = header.split(":", 1)
        headers[name.strip()] = value.strip()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        for _ in range(2):
            connection.request("GET", path, headers=headers)
            response = connection.getresponse()
            response.read()
            if response.will_close:
                raise RuntimeError(f"{server.name} closes the connection after each answer "
                                   f"(Connection: {response.getheader('connection')}): wrk would reconnect per request")
    finally:
        connection.close()


def fetch(url: str, cookie: str | None = None) -> tuple[int, str]:
    status, _, body = fetch_raw(url, cookie)
    return status, body.decode(errors="replace")


def fetch_raw(url: str, cookie: str | None = None, etag: str | None = None
              ) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers and the body's exact bytes (no decompression: nothing asks for it)."""
    headers = {"Cookie": cookie} if cookie else {}
    if etag:
        headers["If-None-Match"] = etag
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, list(response.headers.items()), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, list(exc.headers.items()), exc.read()


# --- what to request -----------------------------------------------------------------------------------


@dataclass
class Fixtures:
    cookie: str
    customer: str
    item_paths: list[str]
    cards: int


def prepare(url: str) -> Fixtures:
    """A signed-in customer's session, and the paths of the items on the visitor's board."""
    from app.accounts import service as accounts
    from app.accounts.models import Role, User
    from app.accounts.viewer import ANONYMOUS
    from app.db import Database
    from app.organisations.models import Organisation
    from app.roadmap import service as roadmap

    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            user = session.scalar(
                select(User).join(Organisation, Organisation.id == User.organisation_id)
                .where(User.role == Role.customer, Organisation.segment_id.is_not(None), User.is_active.is_(True))
                .order_by(Organisation.segment_id.desc(), User.id).limit(1)
            )
            if user is None:
                sys.exit("no customer with an organisation in this database: run bench/generate.py first")
            token = accounts.start_session(session, user=user, user_agent="bench/board.py")
            columns = roadmap.get_board(session, ANONYMOUS, roadmap.Filters())
            items = [item for column in columns for item in column.items]
            if not items:
                sys.exit("the board is empty: run bench/generate.py first")
            # A browser holds the CSRF cookie its first page set: without it every page would mint one.
            cookie = f"ahead_session={token}; ahead_csrf={secrets.token_urlsafe(32)}"
            return Fixtures(cookie=cookie, customer=user.email,
                            item_paths=[item.path for item in items], cards=len(items))
    finally:
        database.dispose()


# What the vote loads churn: every vote inserts or deletes rows of these, or updates them.
CHURNED = ("votes", "follows", "items", "content_revisions", "user_sessions", "desk_days", "desk_org_days",
           "desk_windows", "desk_item_orgs")


def vacuum_churned(url: str) -> str:
    """PostgreSQL: VACUUM (ANALYZE) the tables the vote loads churn when the server's autovacuum is off (it is on
    this machine kind, and on by default elsewhere). Without it every run's dead rows stay: an evening of vote loads
    left `follows` with 20 live rows behind tens of thousands of dead ones, and later runs measured that."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            if connection.exec_driver_sql("SHOW autovacuum").scalar() == "on":
                return "PostgreSQL autovacuum: on"
            started = time.monotonic()
            for table in CHURNED:
                connection.exec_driver_sql(f"VACUUM (ANALYZE) {table}")
            return (f"PostgreSQL autovacuum: off on this server; vacuumed what vote loads churn "
                    f"({', '.join(CHURNED)}) in {time.monotonic() - started:.1f} s")
    finally:
        engine.dispose()


def lua_cycle(paths: list[str], directory: Path, name: str) -> Path:
    """A wrk script that requests the paths in turn (each wrk thread runs its own copy)."""
    quoted = ", ".join('"' + p.replace("\\", "\\\\").replace('"', '\\"') + '"' for p in paths)
    script = directory / f"{name}.lua"
    script.write_text(
        f"local paths = {{{quoted}}}\nlocal i = 0\n"
        "request = function()\n  i = i % #paths + 1\n  return wrk.format(\"GET\", paths[i])\nend\n"
    )
    return script


def port_taken(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def distinct_queries(url: str, count: int = 60_000, seed: int = 13) -> list[str]:
    """`count` searches no two of which are the same query (after the app's own folding): one-word prefixes of
    three letters or more of the words in the items' titles, and pairs of them, shuffled."""
    from app.db import Database
    from app.roadmap import search
    from app.roadmap.models import Item

    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            vocabulary = sorted({w for title in session.scalars(select(Item.title)) for w in search.words(title)
                                 if len(w) >= 3 and w.isalpha()})
    finally:
        database.dispose()
    prefixes = sorted({w[:n] for w in vocabulary for n in range(3, len(w) + 1)})
    rng = random.Random(seed)
    queries: dict[tuple[str, ...], str] = {(p,): p for p in prefixes}
    while len(queries) < count and len(prefixes) > 1:
        first, second = rng.sample(prefixes, 2)
        queries.setdefault(tuple(search.query_words(f"{first} {second}")), f"{first} {second}")
    chosen = list(queries.values())
    rng.shuffle(chosen)
    return chosen[:count]


def lua_distinct(queries: list[str], directory: Path, threads: int, name: str = "search-distinct") -> Path:
    """A wrk script in which thread k requests queries k, k + threads, k + 2 × threads, ...: no query twice."""
    quoted = ", ".join('"' + q.replace(" ", "+") + '"' for q in queries)  # words only: nothing else to escape
    script = directory / f"{name}.lua"
    script.write_text(
        f"local queries = {{{quoted}}}\nlocal threads = {threads}\nlocal made = 0\n"
        "function setup(thread)\n  thread:set(\"id\", made)\n  made = made + 1\nend\n"
        "local i = -1\n"
        "request = function()\n  i = i + 1\n  local n = (i * threads + id) % #queries + 1\n"
        "  return wrk.format(\"GET\", \"/search?q=\" .. queries[n])\nend\n"
    )
    return script


# --- wrk -----------------------------------------------------------------------------------------------


_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def _ms(value: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def run_wrk(name: str, url: str, args: argparse.Namespace, *, header: str | None = None,
            script: Path | None = None, warmup: bool = True, warmup_script: Path | None = None) -> Result:
    """`warmup_script`: the warm-up's own requests (default: the run's)."""
    base = ["wrk", f"-t{args.threads}", f"-c{args.connections}", "--latency", "--timeout", "5s"]
    if header:
        base += ["-H", header]
    if warmup:
        warm_script = warmup_script or script
        subprocess.run([*base, *(["-s", str(warm_script)] if warm_script else []), f"-d{args.warmup}s", url],
                       capture_output=True, text=True, timeout=args.warmup + 30, check=False)
    if script:
        base += ["-s", str(script)]
    load = os.getloadavg()[0]
    before, started, children = cpu_ticks(), time.monotonic(), resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([*base, f"-d{args.duration}s", url], capture_output=True, text=True,
                         timeout=args.duration + 60, check=True).stdout
    seconds, waited = time.monotonic() - started, resource.getrusage(resource.RUSAGE_CHILDREN)
    used = cpu_used(before, cpu_ticks(), seconds)
    if used:  # wrk has ended: its time is its parent's, this process's, once waited for
        used["wrk"] = (waited.ru_utime + waited.ru_stime - children.ru_utime - children.ru_stime) / seconds
    result = wrk_result(name, out, load)
    print(f"  {name:<18} {result.rps:8.0f} req/s   p50 {result.p50_ms:6.1f} ms   p99 {result.p99_ms:6.1f} ms"
          f"{f'   ERRORS {result.errors}' if result.errors else ''}   (load average before: {load:.1f})", flush=True)
    if used:
        print(f"  {'':<18} CPU in cores by command: {', '.join(f'{c} {v:.2f}' for c, v in used.items())}; ms per "
              f"request: {', '.join(f'{c} {1000 * v * args.duration / max(1, result.requests):.2f}' for c, v in used.items())}",
              flush=True)
    return result


def cpu_ticks() -> dict[tuple[int, int], tuple[str, int]]:
    """The CPU time so far (user + system, in clock ticks) of every process: (pid, start time) -> (command name,
    ticks); this process's (its threads send the background votes) is "bench". Empty where there is no /proc."""
    ticks: dict[tuple[int, int], tuple[str, int]] = {}
    me = os.getpid()
    with contextlib.suppress(OSError):
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            name = "bench" if int(entry.name) == me else stat[stat.index("(") + 1:stat.rindex(")")].split("/")[0]
            fields = stat[stat.rindex(")") + 2:].split()
            ticks[(int(entry.name), int(fields[19]))] = (name, int(fields[11]) + int(fields[12]))
    return ticks


def cpu_used(before: dict[tuple[int, int], tuple[str, int]], after: dict[tuple[int, int], tuple[str, int]],
             seconds: float) -> dict[str, float]:
    """Cores each command name used between two `cpu_ticks`, busiest first, under 0.02 left out: where a run's CPU
    went (the app's workers and the references are "python", PostgreSQL's backends "postgres"), so that a ratio comes
    with its cause. A process started meanwhile counts with all its time, one ended meanwhile not at all (wrk: see
    `run_wrk`)."""
    per_tick = 1 / (os.sysconf("SC_CLK_TCK") * max(seconds, 1e-3))
    used: dict[str, float] = {}
    for key, (name, total) in after.items():
        used[name] = used.get(name, 0.0) + (total - before.get(key, (name, 0))[1]) * per_tick
    return {name: cores for name, cores in sorted(used.items(), key=lambda kv: -kv[1]) if cores >= 0.02}


def wrk_result(name: str, out: str, load: float) -> Result:
    """What wrk's report (`--latency`) says: req/s, p50, p99, requests, errors (non-2xx/3xx and socket errors)."""
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = 0
    if m := re.search(r"Non-2xx or 3xx responses: (\d+)", out):
        errors += int(m.group(1))
    if m := re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out):
        errors += sum(int(g) for g in m.groups())
    if requests == 0 or "requests in" not in out:
        print(out, flush=True)
    return Result(name, rps, p50, p99, requests, errors, load, out)


# --- the vote/unvote load ------------------------------------------------------------------------------

VOTE_AGENT = "bench/board.py votes"
# High enough that a load test measures voting, not the limiter; stated with every result.
VOTE_LIMITS = {"VOTE_RATE_LIMIT": "100000/minute", "VOTE_IP_RATE_LIMIT": "1000000/minute"}
IMPORTANCES = ("nice_to_have", "important", "critical")


@dataclass
class VoteFixtures:
    """Signed-in customer sessions (with their CSRF cookie and token) and the votable items of the board."""

    cookies: list[str]  # "ahead_session=…; ahead_csrf=…"
    tokens: list[str]  # the X-CSRF-Token for each cookie
    user_ids: list[int]
    items: list[tuple[int, str]]  # (id, public_id)
    closed: int  # cards on the board that take no votes (released), left out


def prepare_votes(url: str, secret: str, sessions: int) -> VoteFixtures:
    """`sessions` distinct active customers with no vote and no follow on the board's votable items, each
    signed in with start_session and given a CSRF cookie and its token as the app mints them
    (app.security.CsrfTokens with the server's SECRET_KEY, bound to the session). Sessions left by an earlier run are ended."""
    from sqlalchemy import delete, exists

    from app.accounts import service as accounts
    from app.accounts.models import Role, User, UserSession
    from app.accounts.viewer import ANONYMOUS
    from app.db import Database
    from app.roadmap import service as roadmap
    from app.security import CsrfTokens
    from app.voting.models import Follow, Vote

    csrf = CsrfTokens(secret)
    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            session.execute(delete(UserSession).where(UserSession.user_agent == VOTE_AGENT))
            columns = roadmap.get_board(session, ANONYMOUS, roadmap.Filters())
            cards = [item for column in columns for item in column.items]
            items = [(item.id, item.public_id) for item in cards if item.can_be_voted()]
            if not items:
                sys.exit("no votable item on the board: run bench/generate.py first")
            ids = [item_id for item_id, _ in items]
            users = list(session.scalars(
                select(User)
                .where(User.role == Role.customer, User.is_active.is_(True), User.deleted_at.is_(None),
                       ~exists().where(Vote.user_id == User.id, Vote.item_id.in_(ids)),
                       ~exists().where(Follow.user_id == User.id, Follow.item_id.in_(ids)))
                .order_by(User.id).limit(sessions)
            ))
            if len(users) < sessions:
                sys.exit(f"only {len(users)} customers without votes on the board's items; ask for fewer sessions")
            cookies, tokens = [], []
            for user in users:
                token = accounts.start_session(session, user=user, user_agent=VOTE_AGENT)
                csrf_cookie = csrf.new_cookie_value()
                cookies.append(f"ahead_session={token}; ahead_csrf={csrf_cookie}")
                tokens.append(csrf.form_token(csrf_cookie, token))  # bound to the session (SECURITY.md)
            return VoteFixtures(cookies, tokens, [u.id for u in users], items, closed=len(cards) - len(items))
    finally:
        database.dispose()


@dataclass
class VoteCheck:
    drifted: list[str]  # "public_id: vote_count N, M rows" for every item whose counter is off
    board_votes: int  # vote rows of the bench's customers on the board's items (before clean-up)


def check_votes(url: str, fixtures: VoteFixtures) -> VoteCheck:
    """Counts exact: items.vote_count == count(vote rows) for every item (voting.reconcile without fixing),
    and for the board's items once more in plain SQL."""
    from sqlalchemy import func

    from app.db import Database
    from app.roadmap.models import Item
    from app.voting import service as voting
    from app.voting.models import Vote

    ids = [item_id for item_id, _ in fixtures.items]
    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            drifted = {d.public_id: f"{d.public_id}: vote_count {d.stored}, {d.actual} rows"
                       for d in voting.reconcile(session, fix=False)}
            rows = dict(session.execute(select(Vote.item_id, func.count()).where(Vote.item_id.in_(ids))
                                        .group_by(Vote.item_id)).all())
            for item_id, public_id, stored in session.execute(
                    select(Item.id, Item.public_id, Item.vote_count).where(Item.id.in_(ids))):
                if stored != rows.get(item_id, 0):
                    drifted[public_id] = f"{public_id}: vote_count {stored}, {rows.get(item_id, 0)} rows"
            mine = session.scalar(select(func.count()).select_from(Vote).where(
                Vote.item_id.in_(ids), Vote.user_id.in_(fixtures.user_ids))) or 0
            return VoteCheck(sorted(drifted.values()), mine)
    finally:
        database.dispose()


def clean_up_votes(url: str, fixtures: VoteFixtures, *, end_sessions: bool = True) -> int:
    """Withdraw what the load left through the voting service (counters follow), drop the follows voting
    made and end the bench's sessions (unless another load is still to use them): the data set is as
    generated again. Returns the votes withdrawn."""
    from sqlalchemy import delete

    from app.accounts.models import User, UserSession
    from app.db import Database
    from app.roadmap.models import Item
    from app.voting import service as voting
    from app.voting.models import Follow, Vote

    ids = [item_id for item_id, _ in fixtures.items]
    database = Database(url, pool_size=1)
    try:
        with database.transaction() as session:
            left = session.execute(select(Vote.item_id, Vote.user_id).where(
                Vote.item_id.in_(ids), Vote.user_id.in_(fixtures.user_ids))).all()
            items = {i.id: i for i in session.scalars(select(Item).where(Item.id.in_(ids)))}
            users = {u.id: u for u in session.scalars(select(User).where(User.id.in_(fixtures.user_ids)))}
            for item_id, user_id in left:
                voting.withdraw_vote(session, item=items[item_id], user=users[user_id])
            session.execute(delete(Follow).where(Follow.item_id.in_(ids), Follow.user_id.in_(fixtures.user_ids)))
            if end_sessions:
                session.execute(delete(UserSession).where(UserSession.user_agent == VOTE_AGENT))
            return len(left)
    finally:
        database.dispose()


def lua_votes(fixtures: VoteFixtures, directory: Path, threads: int, window: int = 256) -> Path:
    """A wrk script: each thread has its own share of the sessions and walks every (session, item) pair of
    that share in a shuffled order, in windows: `window` votes, then the withdrawals of the same pairs
    (sent `window` requests later, so nearly every vote has landed and nearly every request changes a
    row). The importance varies. Status codes are counted per thread and printed by done()."""
    import random

    rng = random.Random(4)
    per_thread = []
    for t in range(threads):
        share = list(range(t, len(fixtures.cookies), threads))
        pairs = [(s, i) for s in share for i in range(len(fixtures.items))]
        rng.shuffle(pairs)
        per_thread.append("{" + ",".join(f"{s + 1},{i + 1}" for s, i in pairs) + "}")

    def strings(values: list[str]) -> str:
        return "{" + ",".join('"' + v + '"' for v in values) + "}"

    script = directory / "votes.lua"
    script.write_text(f"""
local cookies = {strings(fixtures.cookies)}
local tokens = {strings(fixtures.tokens)}
local users = {strings([str(u) for u in fixtures.user_ids])}
local items = {strings([public_id for _, public_id in fixtures.items])}
local importances = {strings(list(IMPORTANCES))}
local pairs_of = {{{",".join(per_thread)}}}
local window = {window}
local threads = {{}}
local counter = 0
statuses = {{}}
id = 1

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function request()
  local mine = pairs_of[id]
  local n = #mine / 2
  local block = math.floor(counter / (2 * window))
  local pos = counter % (2 * window)
  local j = (block * window + pos % window) % n
  counter = counter + 1
  local s, i = mine[2 * j + 1], mine[2 * j + 2]
  local headers = {{
    ["Cookie"] = cookies[s], ["X-CSRF-Token"] = tokens[s], ["Accept"] = "application/json",
    ["Content-Type"] = "application/x-www-form-urlencoded", ["X-Bench-User"] = users[s],
  }}
  if pos < window then
    return wrk.format("POST", "/items/" .. items[i] .. "/vote", headers,
                      "importance=" .. importances[(j % 3) + 1] .. "&widget=card&next=%2F")
  end
  return wrk.format("POST", "/items/" .. items[i] .. "/unvote", headers, "widget=card&next=%2F")
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {{}}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      total[status] = (total[status] or 0) + n
    end
  end
  for status, n in pairs(total) do
    io.write(string.format("status %d: %d\\n", status, n))
  end
end
""")
    return script


def _checked_load(name: str, server: Server, url: str, fixtures: VoteFixtures, args: argparse.Namespace,
                  directory: Path, *, end_sessions: bool) -> Result:
    """One wrk run of the vote/unvote script against `server`, which is stopped afterwards (requests wrk gave
    up on may still be running in a worker, and the check must see what is left when nothing writes any
    more); then every counter is checked against its vote rows and what the load left is withdrawn."""
    try:
        script = lua_votes(fixtures, directory, args.threads)
        result = run_wrk(name, server.base + "/", args, script=script)
        statuses = dict(re.findall(r"^status (\d+): (\d+)$", result.output, re.MULTILINE))
        print("    answers: " + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())), flush=True)
        server.stop()
        check = check_votes(url, fixtures)
    finally:
        server.stop()
        withdrawn = clean_up_votes(url, fixtures, end_sessions=end_sessions)
    after = check_votes(url, fixtures)
    result.exact = not check.drifted and not after.drifted
    print(f"    counts after the load: {'exact' if not check.drifted else 'DRIFTED'} "
          f"(items.vote_count = vote rows on all items; {check.board_votes} votes of the bench's customers left "
          f"on the board); clean-up withdrew {withdrawn} through the voting service: "
          f"{'still exact' if not after.drifted else 'DRIFTED'}", flush=True)
    for line in (check.drifted or after.drifted)[:20]:
        print(f"    drift {line}")
    return result


def vote_reference_load(url: str, env: dict[str, str], args: argparse.Namespace, directory: Path,
                        fixtures: VoteFixtures, *, end_sessions: bool) -> Result:
    """The same vote/unvote script against bench/reference_vote.py's bare vote endpoint (the same writes in the
    same transaction shape, nothing else), in a server of its own started for this run."""
    reference = Server("vote-reference", "bench.reference_vote:create_app", args.port + 3, env, args.workers,
                       directory)
    try:
        reference.wait_ready("/healthz")
        return _checked_load("vote reference", reference, url, fixtures, args, directory, end_sessions=end_sessions)
    finally:
        reference.stop()


def vote_unvote_load(app: Server, url: str, env: dict[str, str], args: argparse.Namespace, directory: Path
                     ) -> Result:
    """Vote/unvote from many signed-in sessions spread over the board's votable items, the way static/app.js
    posts them (form body, X-CSRF-Token, Accept: application/json), then check every counter against its
    vote rows (issue 13: ≥ 1,000 req/s on PostgreSQL and ≥ 0.7 of the bare vote reference, counts exact
    afterwards) and clean up. The vote reference (bench/reference_vote.py) runs before and after the app, with
    the same script for the same people, each run followed by the same check and clean-up; the ratio to the
    mean of its two runs is printed with p50/p99 (vote_report). Returns the portal's figures."""
    base = app.base
    fixtures = prepare_votes(url, env["SECRET_KEY"], args.vote_sessions)
    print(f"  vote/unvote: {len(fixtures.cookies)} customer sessions x {len(fixtures.items)} votable items of the "
          f"board ({fixtures.closed} released cards take no votes); POST /items/{{id}}/vote and /unvote, JSON; "
          f"rate limits VOTE_RATE_LIMIT={env['VOTE_RATE_LIMIT']} per user, "
          f"VOTE_IP_RATE_LIMIT={env['VOTE_IP_RATE_LIMIT']} per address "
          "(in process, each worker its own count: no REDIS_URL)", flush=True)
    try:
        first = vote_reference_load(url, env, args, directory, fixtures, end_sessions=False)
        # One real vote and withdrawal first: the session, the CSRF token and the JSON answer all work.
        item = fixtures.items[0][1]
        for action, body in (("vote", "importance=important&widget=card"), ("unvote", "widget=card")):
            request = urllib.request.Request(
                f"{base}/items/{item}/{action}", data=body.encode(), method="POST",
                headers={"Cookie": fixtures.cookies[0], "X-CSRF-Token": fixtures.tokens[0],
                         "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    answer = json.loads(response.read())
            except urllib.error.HTTPError as exc:
                raise RuntimeError(f"{action} answered {exc.code}: {exc.read()[:500]!r}") from exc
            if answer.get("my_vote") != ("important" if action == "vote" else None):
                raise RuntimeError(f"{action} did not do what it says: {answer}")
        result = _checked_load("vote/unvote", app, url, fixtures, args, directory, end_sessions=False)
    except BaseException:
        clean_up_votes(url, fixtures)
        raise
    last = vote_reference_load(url, env, args, directory, fixtures, end_sessions=True)
    vote_report(first, result, last, "sqlite" if url.startswith("sqlite") else "postgresql")
    return result


def vote_report(first: Result, app: Result, last: Result, kind: str) -> None:
    """The vote figures against the bare vote reference (issue 13's target: ≥ 0.7 of it and ≥ 1,000 req/s
    on PostgreSQL, counts exact)."""
    mean = (first.rps + last.rps) / 2
    ratio = app.rps / mean if mean else 0.0
    clean = app.errors == 0 and app.requests > 0
    print(f"\nvote reference (bare FastAPI, the same writes): {first.rps:.0f} req/s first, {last.rps:.0f} last "
          f"(drift {abs(first.rps - last.rps) / mean if mean else 0:.0%})")
    print(f"{'vote/unvote':<18} {'req/s':>7} {'p50 ms':>7} {'p99 ms':>7} {'ratio':>6}")
    for r in (first, last):
        print(f"{'  reference':<18} {r.rps:7.0f} {r.p50_ms:7.1f} {r.p99_ms:7.1f} {r.rps / mean if mean else 0:6.2f}"
              f"{'' if r.exact else '   counts DRIFTED'}")
    targets = (f"≥ 0.70 {verdict(clean and ratio >= 0.7)}, "
               + (f"≥ 1,000/s {verdict(clean and app.rps >= 1000)}, " if kind == "postgresql" else "")
               + f"counts exact {verdict(app.exact)}")
    print(f"{'  portal':<18} {app.rps:7.0f} {app.p50_ms:7.1f} {app.p99_ms:7.1f} {ratio:6.2f}   {targets}"
          f"{f'  ({app.errors} errors)' if app.errors else ''}")


def background_votes_load(app: Server, url: str, env: dict[str, str], args: argparse.Namespace) -> None:
    """Issue 13's "visitor board while 100 votes/s arrive in the background ≥ 0.8 of the same board without
    votes": wrk reads the visitor's board with nothing writing, then while paced clients cast and withdraw votes at
    `--background-votes` per second through the real JSON vote route (each vote withdrawn by the next request of the
    same pair, so every request changes a count and moves the votes revision), `--background-rounds` times in turn;
    the ratio is that of the means. Then every counter is checked against its vote rows and what is left
    withdrawn."""
    import threading

    rate = args.background_votes
    fixtures = prepare_votes(url, env["SECRET_KEY"], 50)
    pairs = [(n, public_id) for n in range(len(fixtures.cookies)) for _, public_id in fixtures.items]
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    stop = threading.Event()
    counter = iter(range(10**9))
    senders = max(4, rate // 6)  # each paced at rate / senders: one request waits for its answer before the next

    def send() -> None:
        interval = senders / rate
        due = time.monotonic()
        while not stop.is_set():
            with lock:
                i = next(counter)
            n, public_id = pairs[(i // 2) % len(pairs)]
            action, body = ("vote", "importance=important&widget=card") if i % 2 == 0 else ("unvote", "widget=card")
            request = urllib.request.Request(
                f"{app.base}/items/{public_id}/{action}", data=body.encode(), method="POST",
                headers={"Cookie": fixtures.cookies[n], "X-CSRF-Token": fixtures.tokens[n],
                         "Accept": "application/json", "Content-Type": "application/x-www-form-urlencoded"})
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                status = 0
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
            due += interval
            time.sleep(max(0.0, due - time.monotonic()))

    rounds = max(1, args.background_rounds)
    pairs_measured: list[tuple[Result, Result]] = []
    started = time.monotonic()
    seconds = 0.0
    try:
        # Quiet and busy in turn, `--background-rounds` times: the quiet board alone moves by 10-25 % from one wrk
        # run to the next on this shared machine, so one pair's ratio says little; the verdict takes all pairs.
        for round_number in range(1, rounds + 1):
            label = f", round {round_number}" if rounds > 1 else ""
            quiet = run_wrk(f"board, visitor (no votes{label})", app.base + "/", args)
            stop.clear()
            threads = [threading.Thread(target=send, daemon=True) for _ in range(senders)]
            began = time.monotonic()
            for thread in threads:
                thread.start()
            busy = run_wrk(f"board, visitor ({rate} votes/s{label})", app.base + "/", args)
            stop.set()
            for thread in threads:
                thread.join(timeout=60)
            seconds += time.monotonic() - began
            pairs_measured.append((quiet, busy))
        check = check_votes(url, fixtures)
    finally:
        stop.set()
        withdrawn = clean_up_votes(url, fixtures)
    after = check_votes(url, fixtures)
    sent = sum(statuses.values())
    quiet_rps = sum(quiet.rps for quiet, _ in pairs_measured)
    busy_rps = sum(busy.rps for _, busy in pairs_measured)
    ratio = busy_rps / quiet_rps if quiet_rps else 0.0
    errors = sum(busy.errors for _, busy in pairs_measured)
    exact = not check.drifted and not after.drifted
    print(f"  votes in the background: {sent} in {seconds:.1f} s of busy runs ({sent / seconds:.0f}/s asked "
          f"{rate}/s, warm-ups included); answers: " + ", ".join(f"{n} x {s}" for s, n in sorted(statuses.items())))
    print(f"  counts after: {'exact' if exact else 'DRIFTED'} (clean-up withdrew {withdrawn}; "
          f"{time.monotonic() - started:.0f} s in all)")
    for number, (quiet, busy) in enumerate(pairs_measured, 1):
        print(f"  round {number}: {busy.rps:.0f} req/s (p50 {busy.p50_ms:.1f}, p99 {busy.p99_ms:.1f} ms) with the votes, "
              f"{quiet.rps:.0f} (p50 {quiet.p50_ms:.1f}, p99 {quiet.p99_ms:.1f} ms) without: "
              f"{busy.rps / quiet.rps if quiet.rps else 0.0:.2f}")
    print(f"board, visitor while {rate} votes/s arrive: {busy_rps / rounds:.0f} req/s vs {quiet_rps / rounds:.0f} "
          f"without (means of {rounds} alternating round{'s' if rounds > 1 else ''}): {ratio:.2f}   "
          f"≥ 0.8 {verdict(ratio >= 0.8 and errors == 0)}, counts exact {verdict(exact)}")


def background_searches_load(app: Server, url: str, args: argparse.Namespace, directory: Path) -> None:
    """The kept board while never-repeated searches flood the same workers (a walk-through's finding: a search the
    app has not kept blocks the worker's loop while it runs, and a kept page waits behind every one ahead of it):
    a few readers of the visitor's board (wrk, `--board-readers` connections) first alone, then while
    `--background-searches` connections of another wrk ask searches no request asked before. Prints the board's
    p50/p99 in both and the searches' own req/s and p99."""
    queries = distinct_queries(url)
    half = len(queries) // 2
    readers = argparse.Namespace(**{**vars(args), "connections": args.board_readers, "threads": 1})
    flood = ["wrk", f"-t{args.threads}", f"-c{args.background_searches}", "--latency", "--timeout", "5s"]
    # The flood's warm-up first (the other half of the queries): the run meets workers that have searched before.
    subprocess.run([*flood, "-s", str(lua_distinct(queries[half:], directory, args.threads, name="flood-warm-up")),
                    f"-d{args.warmup}s", app.base + "/"], capture_output=True, text=True, timeout=args.warmup + 30,
                   check=False)
    quiet = run_wrk("board, visitor (no searches)", app.base + "/", readers)
    busy, out = _board_while(app, readers, f"board, visitor ({args.background_searches} connections searching)",
                             lambda seconds: [*flood, "-s", str(lua_distinct(queries[:half], directory, args.threads,
                                                                             name="flood")), f"-d{seconds}s",
                                              app.base + "/"])
    searches = wrk_result("searches", out, os.getloadavg()[0])
    print(f"  searches in the background: {searches.rps:.0f} req/s, p99 {searches.p99_ms:.0f} ms"
          f"{f', ERRORS {searches.errors}' if searches.errors else ''}")
    print(f"board, visitor ({args.board_readers} connections) while {args.background_searches} connections search: "
          f"{busy.rps:.0f} req/s, p50 {busy.p50_ms:.1f}, p99 {busy.p99_ms:.1f} ms; alone {quiet.rps:.0f} req/s, "
          f"p50 {quiet.p50_ms:.1f}, p99 {quiet.p99_ms:.1f} ms")


def _board_while(app: Server, readers: argparse.Namespace, name: str, background: Callable[[int], list[str]]
                 ) -> tuple[Result, str]:
    """The visitor's board read by `readers` while `background(seconds)`, another wrk's command, runs for longer than
    that read (its warm-up included): the board's result and the other wrk's report."""
    seconds = readers.duration + readers.warmup + 2
    process = subprocess.Popen(background(seconds), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(1)
        busy = run_wrk(name, app.base + "/", readers)
        out, _ = process.communicate(timeout=seconds + 60)
    finally:
        if process.poll() is None:
            process.kill()
    return busy, out


def flood_load(app: Server, args: argparse.Namespace, fixtures: Fixtures) -> None:
    """The kept board while one ordinary address floods the same workers (a walk-through's finding: made on the event
    loop per request, the changelog's feed, the sitemap or the API's item held the kept board at a median of 0.3-1.7 s,
    the sitemap at none answered): `--board-readers` connections read the visitor's board alone, then while
    `--flood-connections` connections of another wrk ask each of `--flood` in turn. `{item}` in a path is an item of
    the board. Prints the board's req/s, p50 and p99 each time, and the flood's own."""
    readers = argparse.Namespace(**{**vars(args), "connections": args.board_readers, "threads": 1})
    item = fixtures.item_paths[0].split("/")[2]
    quiet = run_wrk("board, visitor (alone)", app.base + "/", readers)
    print(f"board, visitor ({args.board_readers} connections) alone: {quiet.rps:.0f} req/s, p50 {quiet.p50_ms:.1f}, "
          f"p99 {quiet.p99_ms:.1f} ms")
    for path in [p.strip().replace("{item}", item) for p in args.flood.split(";") if p.strip()]:
        busy, out = _board_while(app, readers, f"board, visitor (while {path})",
                                 lambda seconds, path=path: ["wrk", f"-t{args.threads}", f"-c{args.flood_connections}",
                                                             "--latency", "--timeout", "5s", f"-d{seconds}s",
                                                             app.base + path])
        flooding = wrk_result(path, out, os.getloadavg()[0])
        print(f"board, visitor while {args.flood_connections} connections ask {path}: {busy.rps:.0f} req/s, "
              f"p50 {busy.p50_ms:.1f}, p99 {busy.p99_ms:.1f} ms{f', ERRORS {busy.errors}' if busy.errors else ''}; "
              f"{path} itself {flooding.rps:.0f} req/s, p99 {flooding.p99_ms:.0f} ms"
              f"{f', ERRORS {flooding.errors}' if flooding.errors else ''}")


def after_quiet_load(app: Server, args: argparse.Namespace, measured: list[Measured]) -> None:
    """The item pages (and the visitor's board) each time after a quiet minute and more, when every kept page's minute
    has turned: a portal's first visitors after a lull, which `board.py`'s runs never meet (each warm-up makes every page
    just before). `--after-quiet` rounds of: 62 s of quiet, then wrk over the pages for `--duration` seconds, no
    warm-up. Prints each round's req/s, p50, p99 and the slowest request; the pages' own runs above are the steady
    figures to compare with (each round's line as theirs, and its slowest request)."""
    wanted = [page for page in measured if page.name in ("item page", "board, visitor")]
    directory = Path(tempfile.mkdtemp(prefix="ahead-quiet-"))
    paths = [path for page in wanted for path in page.paths]
    script = lua_cycle(paths, directory, "after-quiet")
    print(f"\nafter a quiet minute ({len(paths)} pages: the board and its item pages in turn, no warm-up):")
    for round_ in range(1, args.after_quiet + 1):
        time.sleep(62)
        result = run_wrk(f"round {round_}", app.base + "/", args, script=script, warmup=False)
        slowest = re.search(r"^\s+Latency\s+\S+\s+\S+\s+(\S+)", result.output, re.MULTILINE)
        print(f"  {'':<18} the slowest request {slowest.group(1) if slowest else '?'}", flush=True)


# --- report --------------------------------------------------------------------------------------------


def verdict(ok: bool | None) -> str:
    return "—" if ok is None else ("PASS" if ok else "MISS")


def report(rows: list[tuple[Result, Result | None, Result | None]]) -> None:
    """Each page against bare FastAPI and raw ASGI serving its very bytes, measured just before it."""
    visitor = next((app.rps for app, _, _ in rows if app.name == "board, visitor"), None)
    print(f"\n{'page':<16} {'req/s':>7} {'p50':>6} {'p99':>7} │ {'FastAPI':>7} {'p50':>6} {'p99':>7} │ "
          f"{'raw ASGI':>8} {'p50':>6} {'p99':>7} │ {'÷FastAPI':>8} {'÷raw':>5}   targets (issue 13)")
    for app, bare, raw in rows:
        target = TARGETS.get(app.name, Target())
        clean = app.errors == 0 and app.requests > 0
        ratio = app.rps / bare.rps if bare and bare.rps else None
        ratio_raw = app.rps / raw.rps if raw and raw.rps else None
        checks = []
        if target.ratio is not None and ratio is not None:
            checks.append(f"≥ {target.ratio:.1f} of FastAPI {verdict(clean and ratio >= target.ratio)}")
        if target.tail is not None:
            checks.append(f"p99 ≤ {target.tail:.0f}× p50 ({app.p99_ms / max(app.p50_ms, 0.001):.1f}×) "
                          f"{verdict(clean and app.p99_ms <= target.tail * app.p50_ms)}")
        if target.of_visitor is not None and visitor:
            share = app.rps / visitor
            checks.append(f"≥ {target.of_visitor:.1f} of the visitor's board ({share:.2f}) "
                          f"{verdict(clean and share >= target.of_visitor)}")
        if target.p99_ms is not None:
            checks.append(f"p99 ≤ {target.p99_ms:.0f} ms {verdict(clean and app.p99_ms <= target.p99_ms)}")
        if app.exact is not None:
            checks.append(f"counts exact {verdict(app.exact)}")
        if app.errors:
            checks.append(f"{app.errors} errors")

        def cells(r: Result | None) -> str:
            return f"{r.rps:7.0f} {r.p50_ms:6.1f} {r.p99_ms:7.1f}" if r else f"{'—':>7} {'':>6} {'':>7}"

        print(f"{app.name:<16} {cells(app)} │ {cells(bare)} │ {cells(raw):>22} │ "
              f"{f'{ratio:.2f}' if ratio is not None else '—':>8} {f'{ratio_raw:.2f}' if ratio_raw is not None else '—':>5}"
              f"   {'; '.join(checks) or '—'}")


def capture(app: Server, measured: list[Measured], target: Path) -> None:
    """The exact bytes of every measured page, per audience, for the references (bench/reference_app.py); a
    revalidated page (`etag`) is the app's 304 itself, which must be one."""
    from bench.reference_app import save_pages

    pages = []
    sizes: dict[str, int] = {}
    for page in measured:
        for path in page.paths:
            status, headers, body = fetch_raw(app.base + path, page.cookie, page.etag)
            expected = 304 if page.etag else 200
            if status != expected:
                raise RuntimeError(f"{page.name}: {path} answered {status}, not {expected}:\n{body[:500]!r}")
            pages.append((path, page.audience, headers, body))
            sizes.setdefault(page.name, len(body))
    save_pages(target, pages)
    print("pages captured for the references (bytes of the first of each): "
          + ", ".join(f"{name} {size:,}" for name, size in sizes.items()), flush=True)


def etag_of(app: Server, path: str) -> str:
    """The ETag the app answers a signed-out visitor's page with (the same from every worker: it is the hash of
    the bytes)."""
    status, headers, _ = fetch_raw(app.base + path)
    etag = next((value for name, value in headers if name.lower() == "etag"), None)
    if status != 200 or etag is None:
        raise RuntimeError(f"{path} answered {status} without an ETag")
    return etag


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="the database bench/generate.py filled: SQLite path or postgresql:// URL")
    parser.add_argument("--port", type=int, default=8710, help="the app's port; the references use the next two, the vote reference the third")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--loop", default=Server.loop,
                        help="uvicorn's --loop for every server started: asyncio, uvloop (accepting one new "
                             "connection per turn of the loop) or the default, `ahead serve`'s")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--duration", type=int, default=10, help="seconds per measurement (at most 60)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up before each measurement")
    parser.add_argument("--votes", action="store_true",
                        help="also the vote/unvote load (signed-in customers voting and withdrawing over the "
                             "board's items; counters checked afterwards, and the votes withdrawn again)")
    parser.add_argument("--only-votes", action="store_true",
                        help="the reference and the vote/unvote load only, not the pages")
    parser.add_argument("--vote-sessions", type=int, default=400, metavar="N",
                        help="distinct signed-in customers for the vote load (default 400)")
    parser.add_argument("--pages", metavar="NAMES",
                        help="only these pages, names separated by semicolons (e.g. 'search;search, distinct'); "
                             "'search, distinct' is measured only when named here")
    parser.add_argument("--background-rounds", type=int, default=3, metavar="N",
                        help="with --background-votes: quiet and busy runs of the board in turn, N of each; the "
                             "verdict is the ratio of their means (default 3)")
    parser.add_argument("--background-votes", type=int, default=0, metavar="PER_SECOND",
                        help="also the visitor's board without votes and while this many votes per second arrive "
                             "through the vote route (issue 13: ≥ 0.8 of the board without votes; e.g. 100)")
    parser.add_argument("--background-searches", type=int, default=0, metavar="CONNECTIONS",
                        help="also the visitor's board read by a few connections (--board-readers) alone and while "
                             "this many connections ask never-repeated searches (e.g. 48)")
    parser.add_argument("--board-readers", type=int, default=4, metavar="CONNECTIONS",
                        help="connections reading the board with --background-searches or --flood (default 4)")
    parser.add_argument("--flood", metavar="PATHS",
                        help="also the visitor's board read by a few connections (--board-readers) alone and while "
                             "--flood-connections ask each of these paths in turn (separated by semicolons; {item} is "
                             "an item's id), e.g. '/changelog.atom;/sitemap.xml;/api/v1/items/{item}'")
    parser.add_argument("--flood-connections", type=int, default=16, metavar="CONNECTIONS",
                        help="connections asking each --flood path (default 16)")
    parser.add_argument("--after-quiet", type=int, default=0, metavar="ROUNDS",
                        help="also the board and its item pages right after a quiet minute, this many times "
                             "(62 s of quiet before each)")
    parser.add_argument("--wait-quiet", type=int, default=0, metavar="SECONDS",
                        help="first wait up to this long (at most 1800) for the 1-minute load average to fall "
                             "below the number of CPUs: other work on a shared machine skews every figure")
    args = parser.parse_args()
    args.duration = max(1, min(args.duration, 60))
    args.warmup = max(0, min(args.warmup, 10))
    args.votes = args.votes or args.only_votes
    Server.loop = args.loop
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install -y wrk")
    # On a shared machine another run may hold these ports: wrk would then measure its servers, not ours.
    if taken := [port for port in range(args.port, args.port + 4) if port_taken(port)]:
        sys.exit(f"port(s) {', '.join(map(str, taken))} already in use: choose another --port")

    if args.wait_quiet:
        deadline = time.monotonic() + min(args.wait_quiet, 1800)
        while os.getloadavg()[0] >= (os.cpu_count() or 1) and time.monotonic() < deadline:
            time.sleep(10)
        print(f"load average {os.getloadavg()[0]:.1f} at the start")
    url_db = url = database_url(args.target)
    kind = "sqlite" if url.startswith("sqlite") else "postgresql"
    fixtures = prepare(url)
    if kind == "postgresql":
        print(vacuum_churned(url))
    print(f"database: {make_url(url).render_as_string(hide_password=True)} ({kind}); {fixtures.cards} cards on the "
          f"board; customer {fixtures.customer}")
    print(f"wrk -t{args.threads} -c{args.connections} -d{args.duration}s --latency (after {args.warmup} s of "
          f"warm-up); {args.workers} uvicorn workers each, {args.loop} loop; {os.cpu_count()} CPUs")

    env = {**os.environ, "DATABASE_URL": url, "AHEAD_ENV": "production", "SECRET_KEY": secrets.token_urlsafe(48),
           "PYTHONPATH": str(ROOT), "PORT": str(args.port),
           "BASE_URL": f"http://127.0.0.1:{args.port}"}
    env.pop("REDIS_URL", None)
    if args.votes or args.background_votes:
        env.update(VOTE_LIMITS)
        print(f"rate limits for the vote load: VOTE_RATE_LIMIT={env['VOTE_RATE_LIMIT']} (per customer), "
              f"VOTE_IP_RATE_LIMIT={env['VOTE_IP_RATE_LIMIT']} (per address; all of wrk is 127.0.0.1), in process "
              "per worker; the defaults are 60/minute and 600/minute")
    servers: list[Server] = []
    rows: list[tuple[Result, Result | None, Result | None]] = []
    with tempfile.TemporaryDirectory(prefix="ahead-bench-") as tmp:
        directory = Path(tmp)
        try:
            app = Server("app", "app.main:create_app", args.port, env, args.workers, directory)
            servers.append(app)
            app.wait_ready("/healthz")
            # Every page answers 200 before it is timed, and the cookie really signs the customer in.
            status, body = fetch(app.base + "/", fixtures.cookie)
            if status != 200 or "Sign out" not in body:
                raise RuntimeError(f"the customer's cookie did not sign them in ({status})")
            measured = [] if args.only_votes else [
                Measured("board, visitor", ["/"]),
                Measured("board, 304", ["/"], etag=etag_of(app, "/")),
                Measured("board, customer", ["/"], fixtures.cookie),
                Measured("now/next/later", ["/?view=horizon"]),
                Measured("item page", fixtures.item_paths),
            ]
            # Search is measured when it works on this database (an index built by an older generator
            # may not be the one the app now reads).
            search_paths = [f"/search?q={q.replace(' ', '+')}" for q in SEARCHES]
            search_status, _ = fetch(app.base + search_paths[0])
            if measured and search_status == 200:
                measured.append(Measured("search", search_paths))
            elif measured:
                print(f"  search             skipped: /search answered {search_status} on this database")
            wanted = {name.strip() for name in args.pages.split(";")} if args.pages else None
            if wanted is not None:
                measured = [page for page in measured if page.name in wanted]
            if not measured:  # the vote load alone: its own figure, no page reference
                measured_pages: list[Measured] = [Measured("board, visitor", ["/"])]
            else:
                measured_pages = measured
            pages_file = directory / "pages.json"
            capture(app, measured_pages, pages_file)
            ref_env = {**env, "AHEAD_REFERENCE_PAGES": str(pages_file)}
            bare = Server("bare FastAPI", "bench.reference_app:create_app", args.port + 1, ref_env, args.workers,
                          directory)
            servers.append(bare)
            raw = Server("raw ASGI", "bench.reference_app:create_raw_app", args.port + 2, ref_env, args.workers,
                         directory)
            servers.append(raw)
            bare.wait_ready("/healthz")
            raw.wait_ready("/healthz")
            for page in measured_pages:  # each as wrk will ask for it: its cookie or its ETag
                for server in (app, bare, raw):
                    keeps_alive(server, page.paths[0], page.header)

            print("\nmeasuring (each page: bare FastAPI, the app, raw ASGI, in turn):")
            for page in measured:
                script = lua_cycle(page.paths, directory, page.name.replace("/", "-").replace(" ", "-")) \
                    if len(page.paths) > 1 else None
                header = page.header
                url = page.paths[0] if script is None else "/"
                on_bare = run_wrk(f"  FastAPI: {page.name}", bare.base + url, args, header=header, script=script)
                on_app = run_wrk(page.name, app.base + url, args, header=header, script=script)
                on_raw = run_wrk(f"  raw: {page.name}", raw.base + url, args, header=header, script=script)
                rows.append((on_app, on_bare, on_raw))
            if wanted is not None and "search, distinct" in wanted:
                queries = distinct_queries(url_db)
                # The warm-up (as every other page has) asks the other half: no query is asked twice, warm-up
                # included, and the run meets workers that have served searches before, as a running portal's do.
                half = len(queries) // 2
                print(f"  search, distinct: {len(queries):,} distinct queries, each asked once at most "
                      f"({half:,} for the warm-up, {len(queries) - half:,} for the run)")
                script = lua_distinct(queries[:half], directory, args.threads)
                warm = lua_distinct(queries[half:], directory, args.threads, name="search-distinct-warm-up")
                rows.append((run_wrk("search, distinct", app.base + "/", args, script=script, warmup_script=warm),
                             None, None))
            if args.background_votes:
                background_votes_load(app, url_db, env, args)
            if args.background_searches:
                background_searches_load(app, url_db, args, directory)
            if args.flood:
                flood_load(app, args, fixtures)
            if args.after_quiet:
                after_quiet_load(app, args, measured_pages)
            if args.votes:
                rows.append((vote_unvote_load(app, url_db, env, args, directory), None, None))
        finally:
            for server in reversed(servers):
                server.stop()

    report(rows)
    busiest = max((r.load for row in rows for r in row if r is not None), default=os.getloadavg()[0])
    print(f"\nload average: up to {busiest:.1f} on {os.cpu_count()} CPUs during the run")
    if busiest >= (os.cpu_count() or 1):
        print(f"WARNING: the load average reached {busiest:.1f} on {os.cpu_count()} CPUs: other processes took part "
              "of the CPU, and req/s follow what is left. Ratios measured side by side hold better than absolute "
              "figures, yet say less than CPU per request: see bench/breakdown.py.")
    print("\ntargets from issue 13: visitor board, Now/Next/Later and item page ≥ 0.6 of bare FastAPI serving the "
          "same bytes, p99 ≤ 3× p50; the board revalidated with its ETag: 304, ≥ 0.8 of bare FastAPI answering "
          "the same 304; customer board ≥ 0.5 of the visitor's; search p99 ≤ 150 ms; vote/unvote: "
          "counts exact (its req/s targets are the vote path's own bench).")

if __name__ == "__main__":
    main()
