# Ahead in a container: slim Python 3.11, a non-root user, migrations on start, a health check.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    AHEAD_ENV=production PORT=8000

WORKDIR /srv/ahead
COPY pyproject.toml README.md ./
COPY app ./app
# Editable install: templates, static files and migrations are read from /srv/ahead next to app/.
RUN pip install --no-compile -e . && useradd --system --uid 10001 --home /srv/ahead ahead
COPY alembic.ini ./
COPY migrations ./migrations
COPY templates ./templates
COPY static ./static
RUN mkdir -p /srv/ahead/data && chown ahead /srv/ahead/data

USER ahead
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s \
  CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"PORT\", \"8000\")}/healthz', timeout=2)"

# SECRET_KEY and DATABASE_URL come from the environment (docker run -e …).
CMD ["sh", "-c", "ahead migrate && exec ahead serve --host 0.0.0.0 --port ${PORT}"]
