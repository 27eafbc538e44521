"""Staff API tokens the way a person gets one: the admin page's form, the token read off the page once."""

from __future__ import annotations

import re

import httpx

from tests.helpers.http import post_form

NEW_TOKEN = re.compile(r'id="new-token"[^>]*value="(ahead_[A-Za-z0-9_-]+)"')


async def create_token(client: httpx.AsyncClient, *, name: str = "Desk report", scope: str = "read",
                       days: str = "") -> str:
    """Create a token as the signed-in staff member; the token as the page shows it, that one time."""
    response = await post_form(client, "/admin/tokens", {"name": name, "scope": scope, "expires_in_days": days},
                               page="/admin/tokens")
    assert response.status_code == 200, response.text
    found = NEW_TOKEN.search(response.text)
    assert found, "the new token is not on the page"
    return found.group(1)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
