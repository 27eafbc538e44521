"""Search: word prefixes, every word must match, accents folded, matches highlighted, titles first."""

from __future__ import annotations

import re
from datetime import timedelta

from app.db import utcnow
from tests.factories import make_item


def result_titles(html: str) -> list[str]:
    """The titles of the hits, in order, as a person reads them (highlight marks removed)."""
    found = re.findall(r'<li class="search-hit">\s*<h2><a href="[^"]*">(.*?)</a></h2>', html, re.DOTALL)
    return [re.sub(r"</?mark>", "", title) for title in found]


async def search(client, q: str) -> str:  # type: ignore[no-untyped-def]
    response = await client.get("/search", params={"q": q})
    assert response.status_code == 200
    return response.text


async def test_a_word_prefix_finds_the_whole_word_and_is_highlighted(client, session):
    make_item(session, title="Integrations marketplace", summary="Connect the tools you use")
    make_item(session, title="Dark mode")

    page = await search(client, "integ")

    assert result_titles(page) == ["Integrations marketplace"]
    assert "<mark>Integ</mark>rations marketplace" in page
    assert "1 result for “integ”" in page


async def test_every_word_must_match(client, session):
    make_item(session, title="Slack integration")
    make_item(session, title="Teams integration")
    make_item(session, title="Slack notifications")

    page = await search(client, "slack integ")

    assert result_titles(page) == ["Slack integration"]
    assert "<mark>Slack</mark> <mark>integ</mark>ration" in page


async def test_accents_are_folded_both_ways(client, session):
    make_item(session, title="Résumé parsing")
    make_item(session, title="Naive date handling", description="Fix naïve timestamps")

    assert result_titles(await search(client, "resume")) == ["Résumé parsing"]
    assert "<mark>Résumé</mark> parsing" in await search(client, "resume")
    assert result_titles(await search(client, "NAÏVE")) == ["Naive date handling"]


async def test_matches_in_the_description_show_a_highlighted_snippet(client, session):
    make_item(session, title="Reporting", summary="",
              description="Long intro. " * 30 + "Then we add **webhooks** for every report event.")

    page = await search(client, "webhook")

    assert result_titles(page) == ["Reporting"]
    assert "<mark>webhook</mark>s for every report event" in page


async def test_a_title_match_ranks_above_a_body_match(client, session):
    now = utcnow()
    make_item(session, title="Notification settings", description="Also covers webhooks.", updated_at=now)
    make_item(session, title="Webhooks", description="Outgoing events.", updated_at=now - timedelta(days=60))
    make_item(session, title="Audit export", summary="Send audit events to webhooks", updated_at=now)

    assert result_titles(await search(client, "webhooks")) == ["Webhooks", "Audit export", "Notification settings"]


async def test_markup_in_a_title_is_shown_as_text(client, session):
    make_item(session, title='<script>alert("x")</script> Script runner <img src=x onerror=alert(1)>')

    page = await search(client, "script")

    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;<mark>script</mark>&gt;alert(&#34;x&#34;)&lt;/<mark>script</mark>&gt; <mark>Script</mark> runner" in page


async def test_no_match_and_empty_query(client, session):
    make_item(session, title="Dark mode")

    assert "No matches" in await search(client, "zebra")
    empty = await search(client, "   ")
    assert "result" not in empty and "No matches" not in empty
