"""A Jira webhook's secret travels in its address (/hooks/jira/{id}/{secret}): a delivery to a real uvicorn
server must not write it to the access log, nor to ours."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

SCRIPT = r"""
import json, socket, sys, threading, time
import httpx, uvicorn
from sqlalchemy import create_engine, text
from app.config import Settings
from app.main import create_app
from app.migrate import upgrade
from app.tech import trackers

url, body_path = sys.argv[1], sys.argv[2]
upgrade(url)
key = "log-test-" + "k" * 32
settings = Settings(database_url=url, secret_key=key, _env_file=None)
engine = create_engine(url)
with engine.begin() as conn:
    conn.execute(text("INSERT INTO tracker_hooks (public_id, kind, name, salt, created_at) "
                      "VALUES ('hookpub1', 'jira', 'Jira', 'salt-1', '2026-01-01 00:00:00')"))
secret = trackers.derive_secret(key, "salt-1")
app = create_app(settings)
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="info"))
thread = threading.Thread(target=server.run)
thread.start()
while not server.started:
    time.sleep(0.05)
data = json.loads(open(body_path).read())
data["timestamp"] = int(time.time() * 1000)
for address in (f"/hooks/jira/hookpub1/{secret}", f"/hooks/jira/hookpub1/{secret}?x=1", "/hooks/jira/hookpub1/wrong"):
    answer = httpx.post(f"http://127.0.0.1:{port}{address}", content=json.dumps(data).encode(),
                        headers={"Content-Type": "application/json"})
    print("status", answer.status_code, flush=True)
server.should_exit = True
thread.join()
print("SECRET", secret)
"""


def test_a_jira_delivery_does_not_write_its_secret_to_the_logs(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    env.pop("DATABASE_URL", None)
    body = Path(__file__).parent / "payloads" / "jira_issue_updated.json"
    run = subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite+pysqlite:///{tmp_path / 'hooks.db'}", str(body)],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    secret = run.stdout.split("SECRET ")[1].strip()
    log = run.stdout.split("SECRET ")[0] + run.stderr
    assert "status 200" in log and "status 401" in log
    assert secret not in log
    assert '"POST /hooks/jira/hookpub1/[redacted] HTTP/1.1" 200' in log
    assert '"POST /hooks/jira/hookpub1/[redacted]?x=1 HTTP/1.1" 200' in log
    assert '"POST /hooks/jira/hookpub1/[redacted] HTTP/1.1" 401' in log  # a wrong one is not written either
