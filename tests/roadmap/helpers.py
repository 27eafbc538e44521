"""Helpers for the roadmap tests."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.factories import make_item


def released(session, title: str, day: int, **overrides):  # type: ignore[no-untyped-def]
    item = make_item(session, stage_slug="released", title=title, **overrides)
    item.released_at = datetime(2026, 3, day, 12, 0, tzinfo=UTC)
    session.flush()
    return item


def result_titles(html: str) -> list[str]:
    """The titles of the hits, in order, as a person reads them (highlight marks removed)."""
    found = re.findall(r'<li class="search-hit">\s*<h2><a href="[^"]*">(.*?)</a></h2>', html, re.DOTALL)
    return [re.sub(r"</?mark>", "", title) for title in found]
