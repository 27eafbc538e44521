"""Outbox throughput: how fast a worker sends email to a local SMTP server, and how long queueing takes.

    .venv/bin/python bench/outbox.py [TARGET] [--emails 5000] [--batch-size 100] [--workers 1]

TARGET: a SQLite file (default: a fresh one in a temporary directory) or a PostgreSQL URL whose database
name contains "bench" (created if missing, emptied of outbox jobs first). The SMTP server is aiosmtpd in a
process of its own on loopback (accepts everything, keeps nothing), so it does not share the worker's CPU
time slice or GIL. Prints:

* queueing: the time to enqueue one fan-out job in a request-sized transaction, and the time a fan-out
  handler takes to queue N emails (enqueue_many, in batches of 1,000);
* sending: emails per second for N emails through `ahead worker`-like workers (the real Worker class,
  one SMTP connection per batch, each message marked done in its own transaction).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from sqlalchemy import delete, func, select
from sqlalchemy.engine import make_url

from app.config import Settings, normalise_database_url
from app.db import Database
from app.migrate import upgrade
from app.outbox import service
from app.outbox.models import JobState, OutboxJob
from app.outbox.worker import Worker

CONTEXT = {"portal_name": "Acme Roadmap", "inviter_name": "Ada", "link": "http://roadmap.example/invitations/x",
           "role_label": "a product manager", "days": 7}


def smtp_sink(port: int, ready: Any, stop: Any, cpu: Any) -> None:
    from aiosmtpd.controller import Controller

    class Sink:
        async def handle_DATA(self, server, session, envelope):  # type: ignore[no-untyped-def]
            return "250 2.0.0 Ok: queued"

    controller = Controller(Sink(), hostname="127.0.0.1", port=port)
    controller.start()
    started = time.process_time()
    ready.set()
    stop.wait()
    cpu.put(time.process_time() - started)
    controller.stop()


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_for(target: str | None) -> str:
    if target is None:
        path = Path(tempfile.mkdtemp(prefix="ahead-outbox-bench-")) / "bench.db"
        return f"sqlite+pysqlite:///{path}"
    if target.startswith(("postgres://", "postgresql")):
        url = normalise_database_url(target)
        name = make_url(url).database or ""
        if "bench" not in name:
            raise SystemExit(f"refusing to use {name!r}: the database name must contain 'bench'")
        from sqlalchemy import create_engine, text

        admin = create_engine(make_url(url).set(database="postgres"), isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            if not conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": name}):
                conn.execute(text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        return url
    return f"sqlite+pysqlite:///{Path(target).resolve()}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", nargs="?")
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--fan-out", type=int, default=20000, help="emails a fan-out handler queues")
    parser.add_argument("--batch-size", type=int, default=100)
    parser.add_argument("--workers", type=int, default=1, help="workers (processes) sending at once")
    args = parser.parse_args()

    url = database_for(args.target)
    upgrade(url)
    database = Database(url)
    with database.transaction() as session:
        session.execute(delete(OutboxJob))

    # Queueing in a request: one fan-out job (the followers are the handler's business).
    started = time.perf_counter()
    with database.transaction() as session:
        service.enqueue(session, "notify_followers", {"event": "release:1"}, key="bench:release:1")
    request = time.perf_counter() - started
    # The fan-out itself, in the worker: N email jobs, 1,000 per statement.
    started = time.perf_counter()
    with database.transaction() as session:
        for start in range(0, args.fan_out, 1000):
            service.enqueue_many(session, service.EMAIL_KIND, [
                ({"to": f"f{n}@example.com", "template": "invitation", "context": CONTEXT, "headers": {}},
                 f"email:bench:fan:{n}") for n in range(start, min(start + 1000, args.fan_out))])
    fan_out = time.perf_counter() - started
    with database.transaction() as session:
        session.execute(delete(OutboxJob))
    print(f"queueing: one fan-out job in a request {request * 1000:.1f} ms; "
          f"the fan-out of {args.fan_out:,} emails {fan_out:.2f} s ({args.fan_out / fan_out:,.0f}/s)")

    with database.transaction() as session:
        for start in range(0, args.emails, 1000):
            service.enqueue_many(session, service.EMAIL_KIND, [
                ({"to": f"p{n}@example.com", "template": "invitation", "context": CONTEXT, "headers": {}},
                 f"email:bench:{n}") for n in range(start, min(start + 1000, args.emails))])

    port = free_port()
    ready, stop, cpu = multiprocessing.Event(), multiprocessing.Event(), multiprocessing.Queue()
    sink = multiprocessing.Process(target=smtp_sink, args=(port, ready, stop, cpu), daemon=True)
    sink.start()
    ready.wait(10)
    settings = Settings(database_url=url, secret_key="bench-" + "x" * 40, base_url="http://roadmap.example",
                        smtp_url=f"smtp://127.0.0.1:{port}", outbox_batch_size=args.batch_size,
                        _env_file=None)  # type: ignore[call-arg]
    started = time.perf_counter()
    procs = [multiprocessing.Process(target=_send, args=(url, settings, cpu)) for _ in range(args.workers)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join()
    took = time.perf_counter() - started
    worker_cpu = sum(cpu.get() for _ in procs)
    stop.set()
    sink_cpu = cpu.get(timeout=10)
    with database.transaction() as session:
        done = session.scalar(select(func.count()).select_from(OutboxJob).where(OutboxJob.state == JobState.done))
    sink.join(10)
    print(f"sending: {done:,} of {args.emails:,} emails in {took:.2f} s = {done / took:,.0f} emails/s "
          f"({args.workers} worker{'s' if args.workers > 1 else ''}, batch {args.batch_size}, "
          f"{make_url(url).get_backend_name()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f})")
    print(f"CPU per email: worker {worker_cpu / done * 1000:.2f} ms, SMTP server {sink_cpu / done * 1000:.2f} ms: "
          f"one worker on a core of its own could send about {done / worker_cpu:,.0f} emails/s")
    database.dispose()


def _send(url: str, settings: Settings, cpu: Any) -> None:
    database = Database(url)
    started = time.process_time()
    asyncio.run(Worker(database, settings).run_until_empty())
    cpu.put(time.process_time() - started)
    database.dispose()


if __name__ == "__main__":
    main()
