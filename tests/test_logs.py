"""The operator's log: the portal's own lines reach standard error with time, level and logger, in a process
where nobody configured logging (as under `ahead serve`: uvicorn configures only its own loggers)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

SCRIPT = """
import sys
from starlette.testclient import TestClient
from app.config import Settings
from app.main import create_app
from app.migrate import upgrade

url = sys.argv[1]
upgrade(url)
settings = Settings(database_url=url, secret_key="log-test-" + "k" * 32, sso_jwt_secret="s" * 40, _env_file=None)
with TestClient(create_app(settings)) as client:
    print(client.get("/sso/jwt", params={"token": "not.a.token"}).status_code)
"""


def test_a_refused_host_app_token_is_logged_with_time_level_and_logger(tmp_path: Path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    env.pop("DATABASE_URL", None)
    run = subprocess.run([sys.executable, "-c", SCRIPT, f"sqlite+pysqlite:///{tmp_path / 'logs.db'}"],
                         capture_output=True, text=True, env=env, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "400"
    line = next(line for line in run.stderr.splitlines() if "host-app SSO refused" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO ahead\.sso: host-app SSO refused: ", line), line


def test_a_host_that_configured_logging_keeps_its_configuration():
    import logging

    from app import logs

    ours = logging.getLogger("ahead")
    before = list(ours.handlers)
    logs.configure()  # pytest's capture handlers sit on the root logger
    assert ours.handlers == before
