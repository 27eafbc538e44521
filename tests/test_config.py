import pytest
from pydantic import ValidationError

from app.config import Settings, normalise_database_url


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgres://u:p@db:5432/ahead", "postgresql+psycopg://u:p@db:5432/ahead"),
        ("postgresql://u@db/ahead", "postgresql+psycopg://u@db/ahead"),
        ("postgresql+psycopg://u@db/ahead", "postgresql+psycopg://u@db/ahead"),
        ("sqlite:///data/x.db", "sqlite+pysqlite:///data/x.db"),
    ],
)
def test_plain_database_urls_use_the_chosen_drivers(given, expected):
    assert normalise_database_url(given) == expected


@pytest.mark.parametrize("given", ["bogus://x", "mysql://u:secret@db/ahead", "postgresql+asyncpg://u@db/ahead",
                                   "/var/lib/ahead.db"])
def test_a_database_url_ahead_cannot_use_is_refused_without_repeating_it(given):
    with pytest.raises(ValidationError, match="DATABASE_URL must be a sqlite:/// or postgresql:// address") as caught:
        Settings(database_url=given, secret_key="k" * 40, _env_file=None)
    message = caught.value.errors()[0]["msg"]  # what `ahead` prints (app.cli.main)
    assert "secret" not in message and "db/ahead" not in message


def test_production_refuses_to_start_without_a_secret_key():
    with pytest.raises(ValidationError, match="SECRET_KEY must be set"):
        Settings(ahead_env="production", secret_key="", _env_file=None)


def test_production_refuses_a_placeholder_secret_key():
    with pytest.raises(ValidationError, match="SECRET_KEY"):
        Settings(ahead_env="production", secret_key="changeme", _env_file=None)


def test_production_cookies_are_secure():
    settings = Settings(ahead_env="production", secret_key="k" * 40, base_url="http://roadmap.example.com",
                        _env_file=None)
    assert settings.secure_cookies


def test_https_base_url_makes_cookies_secure_in_development():
    assert Settings(base_url="https://roadmap.example.com", secret_key="k" * 40, _env_file=None).secure_cookies
    assert not Settings(base_url="http://127.0.0.1:8000", secret_key="k" * 40, _env_file=None).secure_cookies


def test_a_malformed_rate_limit_stops_start_up_with_a_clear_message():
    with pytest.raises(ValidationError, match="is not a rate limit"):
        Settings(vote_rate_limit="lots", secret_key="k" * 40, _env_file=None)


def test_production_refuses_to_start_without_base_url():
    """Forms are checked against BASE_URL's origin: guessing it from each request is for development only."""
    with pytest.raises(ValidationError, match="BASE_URL must be set when AHEAD_ENV=production"):
        Settings(ahead_env="production", secret_key="k" * 40, _env_file=None)
    assert Settings(ahead_env="production", secret_key="k" * 40, base_url="https://roadmap.example.com",
                    _env_file=None).base_url_given


def test_base_url_must_be_an_http_address():
    with pytest.raises(ValidationError, match="BASE_URL must be an http"):
        Settings(base_url="roadmap.example.com", secret_key="k" * 40, _env_file=None)


def test_development_guesses_base_url_from_port_and_says_it_guessed():
    settings = Settings(port=8123, secret_key="k" * 40, _env_file=None)
    assert settings.base_url == "http://127.0.0.1:8123" and not settings.base_url_given


def test_trusted_proxies_take_addresses_and_networks_and_name_a_bad_entry():
    settings = Settings(trusted_proxies="127.0.0.1, 172.18.0.0/16,::1", secret_key="k" * 40, _env_file=None)
    assert [str(n) for n in settings.proxy_networks] == ["127.0.0.1/32", "172.18.0.0/16", "::1/128"]
    with pytest.raises(ValidationError, match="TRUSTED_PROXIES: 'nginx' is not an IP address"):
        Settings(trusted_proxies="127.0.0.1,nginx", secret_key="k" * 40, _env_file=None)
