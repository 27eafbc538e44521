"""Helpers for the voting tests: read the vote widget of a page the way a person reads it."""

from __future__ import annotations

import html as html_lib
import re

import httpx

from tests.helpers.http import csrf_token


def widget_text(page: str, public_id: str) -> str:
    """The visible words of the item's vote widget (card or item page), whitespace collapsed."""
    match = re.search(rf'<(section|div) class="vote-(?:box|card)" id="vote-{public_id}"[^>]*>(.*?)</\1>', page,
                      re.DOTALL)
    assert match, f"no vote widget for {public_id}"
    inner = re.sub(r'<(span|label) class="visually-hidden"[^>]*>.*?</\1>', "", match.group(2), flags=re.DOTALL)
    inner = re.sub(r"<select.*?</select>", "", inner, flags=re.DOTALL)
    inner = re.sub(r"<textarea.*?</textarea>", "", inner, flags=re.DOTALL)
    return " ".join(html_lib.unescape(re.sub(r"<[^>]+>", " ", inner)).split())


async def vote_json(client: httpx.AsyncClient, public_id: str, importance: str = "important", *,
                    reason: str = "", page: str = "/", unvote: bool = False) -> httpx.Response:
    """What static/app.js sends: the form's fields, X-CSRF-Token from the page, Accept: application/json."""
    token = await csrf_token(client, page)
    data = {"next": page, "widget": "card"} if unvote else {"importance": importance, "reason": reason,
                                                             "next": page, "widget": "card"}
    return await client.post(f"/items/{public_id}/{'unvote' if unvote else 'vote'}", data=data,
                             headers={"X-CSRF-Token": token, "Accept": "application/json"})
