"""A released or declined item no longer shows its old future timeframe: when it shipped, or nothing."""

from __future__ import annotations

from datetime import UTC, datetime

from app.roadmap.models import Confidence, Timeframe
from tests.factories import make_item, make_product

SHIPPED_ON = datetime(2026, 3, 14, 10, 0, tzinfo=UTC)


def plan(**extra):  # type: ignore[no-untyped-def]
    return {"timeframe": Timeframe.quarter, "target_year": 2027, "target_quarter": 1, "confidence": Confidence.low,
            **extra}


async def test_board_item_page_search_and_api_show_the_release_date_not_the_old_plan(client, session):
    product = make_product(session, slug="reports")
    shipped = make_item(session, product=product, stage_slug="released", title="Shipped exports", **plan())
    shipped.released_at = SHIPPED_ON
    session.flush()

    board = (await client.get("/")).text
    card = board.split('id="card-' + shipped.public_id)[1].split("</article>")[0]
    assert "Released" in card and "14 Mar 2026" in card
    assert "2027 Q1" not in card

    page = (await client.get(shipped.path)).text
    assert "<dt>Released</dt>" in page and "14 March 2026" in page
    assert "2027 Q1" not in page and "low confidence" not in page and "<dt>Timeframe</dt>" not in page

    assert "2027 Q1" not in (await client.get("/search", params={"q": "shipped exports"})).text

    data = (await client.get(f"/api/v1/items/{shipped.public_id}")).json()
    assert (data["timeframe"], data["horizon"], data["confidence"]) == (None, None, None)
    assert data["released_at"].startswith("2026-03-14")


async def test_a_declined_item_shows_no_timeframe_at_all(client, session):
    declined = make_item(session, stage_slug="declined", title="Fax integration", **plan())

    page = (await client.get(declined.path)).text
    assert "Fax integration" in page
    assert "2027 Q1" not in page and "confidence" not in page and "<dt>Timeframe</dt>" not in page

    listed = (await client.get("/", params={"stage": "declined"})).text
    card = listed.split('id="card-' + declined.public_id)[1].split("</article>")[0]
    assert "Fax integration" in card and "2027 Q1" not in card and "badge-timeframe" not in card

    data = (await client.get(f"/api/v1/items/{declined.public_id}")).json()
    assert (data["timeframe"], data["horizon"], data["confidence"]) == (None, None, None)


async def test_an_open_item_keeps_its_timeframe_and_confidence(client, session):
    planned = make_item(session, title="Planned exports", **plan())

    page = (await client.get(planned.path)).text
    assert "<dt>Timeframe</dt>" in page and "2027 Q1" in page and "low confidence" in page
    assert "2027 Q1" in (await client.get("/")).text
    assert (await client.get(f"/api/v1/items/{planned.public_id}")).json()["timeframe"] == "2027 Q1"
