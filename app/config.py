"""One Settings class, read from the environment (and an optional .env file)."""

from __future__ import annotations

import ipaddress
import json
import secrets
from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import (
    BaseModel,
    Field,
    PrivateAttr,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT / "data"

_PLACEHOLDERS = {"", "changeme", "change-me", "secret", "please-change", "dev", "development", "xxx"}


class Environment(StrEnum):
    development = "development"
    production = "production"


def normalise_database_url(url: str) -> str:
    """Map plain URLs onto the drivers Ahead uses (pysqlite, psycopg 3)."""
    if url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.removeprefix("postgres://")
    if url.startswith("postgresql://"):
        return "postgresql+psycopg://" + url.removeprefix("postgresql://")
    if url.startswith("sqlite+pysqlite://"):
        return url
    if url.startswith("sqlite://"):
        return "sqlite+pysqlite://" + url.removeprefix("sqlite://")
    return url


class OidcProvider(BaseModel):
    """One entry of OIDC_PROVIDERS. The callback to register at the provider: BASE_URL/auth/{name}/callback."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,39}$")
    label: str = Field(min_length=1, max_length=60)
    issuer: str = Field(pattern=r"^https?://")
    client_id: str = Field(min_length=1)
    client_secret: str = ""
    scopes: str = "openid email profile"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", env_ignore_empty=True)

    ahead_env: Environment = Environment.development
    port: int = 8000
    database_url: str = ""
    secret_key: str = ""
    base_url: str = ""
    smtp_url: str = ""
    mail_from: str = "Ahead <roadmap@localhost>"
    redis_url: str = ""
    # Seconds between attempts to reach Redis again once it stopped answering; meanwhile each process
    # counts rate limits on its own (memory) and /readyz says "degraded".
    redis_retry_seconds: float = Field(default=10.0, gt=0, le=3600)
    oidc_providers: str = "[]"
    sso_jwt_secret: str = ""
    sso_jwt_public_key: str = ""
    workers: int = Field(default=2, ge=1)
    # Seconds `ahead serve` keeps an idle connection open: longer than a reverse proxy keeps its idle connections to
    # the app (nginx's upstream keepalive_timeout and AWS load balancers: 60 s; Google's: 600 s, so 620 there), so
    # that the proxy, never the app, closes one. Otherwise a request the proxy sends on a connection the app is
    # closing at that moment meets a reset: a vote (POST) answered 502 with nothing wrong, and nginx leaves the
    # instance out for its fail_timeout (bench/instances.py, keep-alive; uvicorn's own default is 5 s).
    keep_alive_seconds: int = Field(default=75, ge=1, le=3600)
    # uvicorn's line per request from `ahead serve`. Off by default: the proxy in front logs every request already
    # (deploy/nginx), and the line cost a kept page about a third of its throughput (a walk-through: 4,900 req/s with
    # it against 6,900 without, bench/README.md). Magic-link and SSO tokens are taken out of it when on.
    access_log: bool = False
    # Password sign-in attempts per (address, client IP): someone guessing from one network cannot lock the
    # person out from everywhere, as a per-address limit would.
    login_rate_limit: str = "10/minute"
    login_ip_rate_limit: str = "30/minute"  # password sign-in and change attempts per client IP, any address
    password_change_rate_limit: str = "10/hour"  # changing one's password, per person (wrong current ones too)
    # Sign-in links by email: per (address, client IP); per address from anywhere (keeps a mailbox from being
    # flooded; password sign-in is not affected); per client IP, any address.
    magic_link_rate_limit: str = "5/hour"
    magic_link_address_rate_limit: str = "10/hour"
    magic_link_ip_rate_limit: str = "30/hour"
    # Asking for the changelog by email (each request emails a link to confirm): per address from anywhere, and
    # per client IP, any address.
    changelog_subscribe_rate_limit: str = "3/hour"
    changelog_subscribe_ip_rate_limit: str = "20/hour"
    idea_rate_limit: str = "5/hour"
    idea_ip_rate_limit: str = "30/hour"
    comment_rate_limit: str = "10/minute"  # per user
    comment_ip_rate_limit: str = "60/minute"  # per address: whole offices share one
    vote_rate_limit: str = "60/minute"  # votes, withdrawals and follows, per user
    vote_ip_rate_limit: str = "600/minute"  # the same, per address
    session_days: int = Field(default=14, ge=1)
    # Seconds. How long a request waits for a lock held by another transaction (PostgreSQL lock_timeout;
    # SQLite's busy timeout for its write lock) and how long one of its statements may run (PostgreSQL
    # statement_timeout; 0: no limit) before it answers 503 "busy, try again": endpoints call the database
    # synchronously, so a wait stalls the whole worker (on PostgreSQL a lock is waited for in slices, below).
    # `ahead` commands use the same lock timeout, in one wait, and db_maintenance_statement_timeout (0: none):
    # exports and imports legitimately read every row.
    db_lock_timeout: float = Field(default=5.0, gt=0, le=600)
    db_statement_timeout: float = Field(default=15.0, ge=0, le=3600)
    db_maintenance_statement_timeout: float = Field(default=0.0, ge=0)
    # Seconds. On PostgreSQL a request's statement waits at most this long for a row lock (its connection's
    # lock_timeout); the request then rolls back, lets the worker serve others for a moment, and runs again,
    # until db_lock_timeout has passed in all. A waiting statement blocks its worker's event loop, so this is
    # about the longest one waiting request stalls the pages of others on the same worker. SQLite and `ahead`
    # commands wait the whole db_lock_timeout in one go.
    db_lock_wait_slice: float = Field(default=0.02, gt=0, le=600)
    # PostgreSQL connections each web process keeps (a fixed pool: no overflow, so a burst waits for a free
    # connection instead of opening more). An instance holds WORKERS x DB_POOL_SIZE; size the server's
    # max_connections (or PgBouncer's pool) for every instance together (docs/deploy.md). SQLite ignores it.
    db_pool_size: int = Field(default=5, ge=1, le=200)
    # Bytes. The largest request body accepted anywhere, and on the routes that take a file upload (the
    # branding logo); bigger bodies get 413 before or while they stream in, never read whole into memory.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Seconds a CDN or other shared cache may keep an answer that is the same for every signed-out visitor
    # (`Cache-Control: public, max-age=0, s-maxage=N`); 0, the default, lets none keep it (app/responses.py).
    public_cache_seconds: int = Field(default=0, ge=0, le=86400)
    max_upload_bytes: int = Field(default=5 * 1024 * 1024, ge=1024)
    # Seconds. A tracker webhook whose format carries its own time (the generic format's signature, Jira's
    # `timestamp`) is refused when it is older (or further in the future) than this: a captured delivery
    # cannot be replayed later. Long enough for a tracker's retries.
    tracker_webhook_tolerance: int = Field(default=900, ge=30, le=7 * 24 * 3600)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto are believed: comma-separated addresses
    # or CIDRs (e.g. "127.0.0.1" for nginx on the same machine, "172.18.0.0/16" for a proxy container).
    # Empty: nobody's, the client is the address that connected.
    trusted_proxies: str = ""
    # The outbox (app/outbox): every web process runs a delivery worker unless OUTBOX_WORKER is off (then run
    # `ahead worker`, here or on another machine). A worker looks for due jobs every OUTBOX_POLL_SECONDS
    # (a commit in its own process wakes it at once), claims up to OUTBOX_BATCH_SIZE at a time (one SMTP
    # connection per batch) and holds them for OUTBOX_LEASE_SECONDS, renewed while it works; a worker that
    # died leaves its jobs to the others once its lease has run out.
    outbox_worker: bool = True
    outbox_poll_seconds: float = Field(default=1.0, gt=0, le=3600)
    outbox_batch_size: int = Field(default=100, ge=1, le=5000)
    outbox_lease_seconds: float = Field(default=120.0, ge=1, le=86400)
    # Days a finished job (sent, failed, given up) is kept for the admin Email page and `ahead outbox`; the
    # workers delete older ones, a few thousand at a time, once an hour.
    outbox_keep_days: int = Field(default=30, ge=1, le=3650)

    # /metrics (Prometheus text format; app/metrics.py). Readable with `Authorization: Bearer METRICS_TOKEN` from
    # anywhere, and without it only by a direct connection (no proxy header) from METRICS_ALLOWED_IPS (addresses
    # or CIDRs; loopback by default). To anyone else, and when METRICS_ENABLED is off, /metrics is an unknown
    # address. Off, requests are not counted either (no per-request cost at all).
    metrics_enabled: bool = True
    metrics_token: str = ""
    metrics_allowed_ips: str = "127.0.0.1, ::1"

    _base_url_given: bool = PrivateAttr(default=False)

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        url = normalise_database_url(value)
        if url and not url.startswith(("sqlite+pysqlite://", "postgresql+psycopg://")):
            # Refused here, in one line, rather than by whichever command reaches the database first (a traceback
            # from SQLAlchemy, or pg_dump trying the host). Only the scheme is repeated: the rest may hold a password.
            scheme = url.split("://", 1)[0] if "://" in url else "no scheme"
            raise ValueError(f"DATABASE_URL must be a sqlite:/// or postgresql:// address, not {scheme[:40]!r}")
        return url

    @field_validator("base_url")
    @classmethod
    def _valid_base_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        value = value.strip()
        if value:
            parts = urlsplit(value)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError(f"BASE_URL must be an http:// or https:// address, e.g. https://roadmap.example.com; "
                                 f"got {value!r}")
        return value

    @model_validator(mode="after")
    def _defaults_and_secrets(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite+pysqlite:///{DATA_DIR / 'ahead.db'}"
        self._base_url_given = bool(self.base_url.strip())
        if not self.base_url:
            self.base_url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.base_url.rstrip("/")
        if self.is_production:
            if self.secret_key.strip().lower() in _PLACEHOLDERS or len(self.secret_key) < 32:
                raise ValueError(
                    "SECRET_KEY must be set to a random value of at least 32 characters when "
                    "AHEAD_ENV=production (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
                )
        elif not self.secret_key:
            self.secret_key = _development_key()
        if self.is_production and not self._base_url_given:
            # Unsafe requests are checked against BASE_URL's origin, links in emails and the OIDC callback
            # are built from it: guessing it from each request's Host header is for development only.
            raise ValueError(
                "BASE_URL must be set when AHEAD_ENV=production: the address people open the portal at, "
                "e.g. BASE_URL=https://roadmap.example.com"
            )
        return self

    @field_validator("login_rate_limit", "login_ip_rate_limit", "password_change_rate_limit", "magic_link_rate_limit",
                     "magic_link_address_rate_limit", "magic_link_ip_rate_limit", "changelog_subscribe_rate_limit",
                     "changelog_subscribe_ip_rate_limit", "idea_rate_limit", "idea_ip_rate_limit", "comment_rate_limit",
                     "comment_ip_rate_limit", "vote_rate_limit", "vote_ip_rate_limit")
    @classmethod
    def _valid_rate_limit(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate limit; write it like '10/minute' or '100/hour'") from None
        return value

    @field_validator("oidc_providers")
    @classmethod
    def _valid_providers(cls, value: str) -> str:
        try:
            providers = _PROVIDERS.validate_python(json.loads(value or "[]"))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ValueError(
                "OIDC_PROVIDERS must be a JSON list of {name, label, issuer, client_id, client_secret, scopes?}: "
                f"{exc}"
            ) from None
        names = [p.name for p in providers]
        if len(names) != len(set(names)):
            raise ValueError("OIDC_PROVIDERS: every provider needs a distinct name")
        return value

    @property
    def providers(self) -> list[OidcProvider]:
        return _PROVIDERS.validate_python(json.loads(self.oidc_providers or "[]"))

    @field_validator("trusted_proxies", "metrics_allowed_ips")
    @classmethod
    def _valid_networks(cls, value: str, info: ValidationInfo) -> str:
        for entry in _split(value):
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(
                    f"{(info.field_name or '').upper()}: {entry!r} is not an IP address or network; write e.g. "
                    "'127.0.0.1' or '10.0.0.0/8, 192.168.1.5'"
                ) from None
        return value

    @field_validator("metrics_token")
    @classmethod
    def _valid_metrics_token(cls, value: str) -> str:
        if value and (value.strip().lower() in _PLACEHOLDERS or len(value) < 24 or value != value.strip()):
            raise ValueError("METRICS_TOKEN must be a random value of at least 24 characters (e.g. `python -c "
                             "'import secrets; print(secrets.token_urlsafe(32))'`), or empty")
        return value

    @property
    def metrics_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(entry, strict=False) for entry in _split(self.metrics_allowed_ips)]

    @property
    def proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(entry, strict=False) for entry in _split(self.trusted_proxies)]

    @property
    def base_url_given(self) -> bool:
        """Whether BASE_URL came from the environment (otherwise it is a guess from PORT, for development)."""
        return self._base_url_given

    @property
    def https(self) -> bool:
        return self.base_url.startswith("https://")

    @property
    def is_production(self) -> bool:
        return self.ahead_env is Environment.production

    @property
    def secure_cookies(self) -> bool:
        return self.is_production or self.base_url.startswith("https://")

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


_PROVIDERS = TypeAdapter(list[OidcProvider])


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _development_key() -> str:
    """A key generated once and kept in the project's `data/` (next to `app/`, whatever the working directory), so
    development needs no settings at all."""
    path = DATA_DIR / "secret_key"
    if path.exists():
        return path.read_text().strip()
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    path.write_text(key)
    path.chmod(0o600)
    return key


@lru_cache
def get_settings() -> Settings:
    return Settings()
