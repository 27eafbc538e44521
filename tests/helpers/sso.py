"""Host-app SSO for tests: the shared secret, the claims a host app sends, an HS256 token around them,
and the settings of an app that accepts them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import httpx
from joserfc import jwt
from joserfc.jwk import OctKey

from app.config import Settings

SECRET = "host-app-shared-secret-" + "s" * 24


def sso_settings(database_url: str) -> Settings:
    """An app that accepts host-app tokens signed with SECRET (use it in a module's `settings` fixture)."""
    return Settings(database_url=database_url, secret_key="test-secret-key-" + "x" * 32,
                    base_url="http://testserver", redis_url="", sso_jwt_secret=SECRET,
                    _env_file=None)  # type: ignore[call-arg]


def claims(**overrides: Any) -> dict[str, Any]:
    """A valid token's claims for Dana of Bigco; an override of None leaves that claim out."""
    now = int(time.time())
    base = {"sub": "host-user-42", "email": "Dana@Bigco.example", "name": "Dana Host", "jti": uuid.uuid4().hex,
            "iat": now, "exp": now + 120}
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def hs256(payload: dict[str, Any], secret: str = SECRET) -> str:
    return jwt.encode({"alg": "HS256"}, payload, OctKey.import_key(secret))


async def sso(client: httpx.AsyncClient, token: str, next_: str | None = None) -> httpx.Response:
    params = {"token": token}
    if next_ is not None:
        params["next"] = next_
    return await client.get("/sso/jwt", params=params)


# The /admin/access form with no staff rules at all (who becomes admin or PM by email, domain or group):
# tests add the one field they change.
NO_STAFF_RULES = {"groups_claim": "groups", "admin_emails": "", "admin_domains": "", "admin_groups": "",
                  "pm_emails": "", "pm_domains": "", "pm_groups": ""}
