# Ahead in a container: Python 3.13 (the newest that CI tests), dependencies from the hashed lock,
# bytecode compiled at build time, a non-root user, migrations on start, a health check.
FROM python:3.13-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    AHEAD_ENV=production PORT=8000

WORKDIR /srv/ahead

# Exactly the pinned releases, each checked against the lock's hashes (pip compiles their bytecode).
# A layer of its own: it is rebuilt only when the lock changes.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock

# Ahead itself, editable: templates, static files and migrations are read from /srv/ahead next to
# app/. --no-deps: everything it needs came from the lock above, nothing is resolved again.
COPY pyproject.toml README.md alembic.ini ./
COPY app ./app
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN pip install --no-deps -e . \
    && python -m compileall -q app migrations \
    && useradd --system --uid 10001 --home-dir /srv/ahead --no-create-home ahead \
    && mkdir -p /srv/ahead/data && chown ahead /srv/ahead/data

# The code stays owned by root and read-only for the user that runs it; only data/ is writable.
USER ahead
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"

# SECRET_KEY and DATABASE_URL come from the environment (docker run -e …).
CMD ["sh", "-c", "ahead migrate && exec ahead serve --host 0.0.0.0 --port ${PORT}"]
