"""What conditional GET and compression cost and save, per request, in this process (no server, no wrk).

    .venv/bin/python bench/http_costs.py /tmp/ahead-bench.db [--requests 300]

Drives the real app (create_app, AHEAD_ENV=production) through a bare ASGI call, as bench/breakdown.py does,
and prints the CPU time per request and the bytes sent for: the visitor's board (a cookie-less visitor: the
kept finished page) and a signed-in customer's board, each through the app without ResponseMiddleware,
then with it: without Accept-Encoding, with brotli, with gzip, and with a matching If-None-Match (304); the Atom feed and the API's item list likewise. Then the
cost of compressing the board once (what a kept page pays once per ETag) and of hashing it (what a page
without a kept ETag pays per answer).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import os
import secrets
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.board import prepare
from bench.generate import database_url


async def call(app: Any, path: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    raw_path, _, query = path.partition("?")
    sent = [(b"host", b"127.0.0.1"), *((k.encode(), v.encode()) for k, v in headers.items())]
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET", "scheme": "http",
             "path": raw_path, "raw_path": raw_path.encode(), "query_string": query.encode(), "root_path": "",
             "headers": sent, "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 80), "state": {}}
    status, got, body = 0, {}, b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, got, body
        if message["type"] == "http.response.start":
            status = message["status"]
            got = {k.decode("latin-1"): v.decode("latin-1") for k, v in message["headers"]}
        else:
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, got, body


async def measure(app: Any, path: str, headers: dict[str, str], requests: int) -> tuple[float, int, int]:
    for _ in range(10):
        status, _, body = await call(app, path, headers)
    start = time.process_time()
    for _ in range(requests):
        status, _, body = await call(app, path, headers)
    return (time.process_time() - start) / requests * 1000, status, len(body)


def cpu_ms(fn: Any, n: int = 50) -> float:
    start = time.process_time()
    for _ in range(n):
        fn()
    return (time.process_time() - start) / n * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target")
    parser.add_argument("--requests", type=int, default=300)
    args = parser.parse_args()
    url = database_url(args.target)
    fixtures = prepare(url)
    os.environ.update(DATABASE_URL=url, AHEAD_ENV="production", SECRET_KEY=secrets.token_urlsafe(48),
                      BASE_URL="http://testserver")
    from app.config import Settings
    from app.main import create_app
    from app.responses import KEPT_LEVELS, PER_ANSWER_LEVELS, ResponseMiddleware, compress

    app = create_app(Settings())
    # The same app without app/responses.ResponseMiddleware: no ETag, no Cache-Control, no compression.
    bare = create_app(Settings())
    bare.user_middleware = [m for m in bare.user_middleware if m.cls is not ResponseMiddleware]
    audiences = {"visitor": {}, "customer": {"cookie": fixtures.cookie}}
    paths = {"board": "/", "atom feed": "/changelog.atom", "API list": "/api/v1/items?per_page=50"}

    async def run() -> None:
        print(f"{'answer':<28} {'without':>14} {'plain':>14} {'br':>14} {'gzip':>14} {'304':>8}   "
              "(CPU ms/req, bytes sent; 'without': no ResponseMiddleware)")
        for page, path in paths.items():
            for who, base in audiences.items():
                if page != "board" and who == "customer":
                    continue
                _, headers, _ = await call(app, path, base)
                ms, status, size = await measure(bare, path, base, args.requests)
                cells = [f"{ms:6.2f} {size:7,d}"]
                for coding in ("", "br", "gzip"):
                    sent = {**base, **({"accept-encoding": coding} if coding else {})}
                    ms, status, size = await measure(app, path, sent, args.requests)
                    cells.append(f"{ms:6.2f} {size:7,d}" if status == 200 else f"status {status}")
                ms, status, _ = await measure(app, path, {**base, "if-none-match": headers.get("etag", "")},
                                              args.requests)
                cells.append(f"{ms:6.2f}" if status == 304 else f"{status}")
                print(f"{page + ', ' + who:<28} " + " ".join(f"{c:>14}" for c in cells[:4]) + f" {cells[4]:>8}")
        _, _, board = await call(app, "/", {})
        print(f"\nthe visitor's board, {len(board):,} bytes: compressing it once (kept per ETag) costs "
              f"br {cpu_ms(lambda: compress(board, 'br', KEPT_LEVELS['br'])):.2f} ms, "
              f"gzip {cpu_ms(lambda: compress(board, 'gzip', KEPT_LEVELS['gzip'])):.2f} ms; per answer (personal "
              f"pages) br {cpu_ms(lambda: compress(board, 'br', PER_ANSWER_LEVELS['br'])):.2f} ms, "
              f"gzip {cpu_ms(lambda: compress(board, 'gzip', PER_ANSWER_LEVELS['gzip'])):.2f} ms; "
              f"hashing it for an ETag {cpu_ms(lambda: hashlib.blake2b(board, digest_size=12).hexdigest(), 500):.3f} ms; "
              f"gzip -6 size {len(gzip.compress(board, 6)):,} bytes")
        print(f"(load average {os.getloadavg()[0]:.1f} / {os.getloadavg()[1]:.1f} on {os.cpu_count()} CPUs)")

    try:
        asyncio.run(run())
    finally:
        app.state.database.dispose()
        bare.state.database.dispose()


if __name__ == "__main__":
    main()
