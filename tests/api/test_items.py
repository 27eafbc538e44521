"""GET /api/v1/items and /api/v1/items/{id}: what an integrator reads."""

from __future__ import annotations

from datetime import timedelta

from app.db import utcnow
from app.roadmap import service as roadmap
from app.roadmap.models import Confidence, Timeframe, Visibility
from tests.factories import make_item, make_pm, make_product, make_tag, stage


async def test_an_item_carries_its_public_fields_and_nothing_internal(client, session):
    product = make_product(session, name="Reports", slug="reports")
    tag = make_tag(session, "Exports")
    item = make_item(session, product=product, tags=[tag], title="Scheduled exports",
                     summary="Send a report every Monday", description="Runs *weekly*.",
                     internal_notes="Customer ACME pays for this", timeframe=Timeframe.quarter,
                     target_year=2027, target_quarter=1, confidence=Confidence.high, vote_count=7)

    body = (await client.get("/api/v1/items")).json()

    assert body["total"] == 1 and body["page"] == 1 and body["per_page"] == roadmap.PAGE_SIZE
    [data] = body["items"]
    assert data["id"] == item.public_id
    assert data["url"] == f"http://testserver/items/{item.public_id}/scheduled-exports"
    assert data["title"] == "Scheduled exports" and data["summary"] == "Send a report every Monday"
    assert data["description"] == "Runs *weekly*."
    assert data["description_html"] == "<p>Runs <em>weekly</em>.</p>\n"
    assert data["product"] == {"slug": "reports", "name": "Reports"}
    assert data["stage"] == {"slug": "planned", "name": "Planned"}
    assert data["tags"] == [{"slug": tag.slug, "name": "Exports"}]
    assert (data["timeframe"], data["confidence"], data["vote_count"]) == ("2027 Q1", "high", 7)
    assert data["horizon"] in ("now", "next", "later")
    assert data["published_at"] and data["updated_at"] and data["released_at"] is None
    assert "internal_notes" not in data and "ACME" not in str(body)
    assert str(item.id) != data["id"]


async def test_filters_combine_and_pages_count_everything(client, session):
    reports, billing = make_product(session, slug="reports"), make_product(session, slug="billing")
    exports = make_tag(session, "Exports")
    start = utcnow() - timedelta(days=30)
    for n in range(5):
        report = make_item(session, product=reports, tags=[exports], title=f"Report export {n}")
        report.published_at = start + timedelta(days=n)
    session.flush()
    make_item(session, product=reports, title="Untagged report")
    make_item(session, product=billing, tags=[exports], title="Invoice export")
    make_item(session, product=reports, tags=[exports], stage_slug="in-progress", title="Export in progress")

    response = await client.get("/api/v1/items", params={"product": "reports", "tag": exports.slug,
                                                         "stage": "planned", "per_page": 2, "page": 2})

    body = response.json()
    assert body["total"] == 5 and body["page"] == 2 and body["per_page"] == 2
    assert [i["title"] for i in body["items"]] == ["Report export 2", "Report export 1"]
    empty = (await client.get("/api/v1/items", params={"product": "no-such-product"})).json()
    assert empty == {"items": [], "total": 0, "page": 1, "per_page": roadmap.PAGE_SIZE, "sort": "newest"}


async def test_sort_by_recently_updated(client, session):
    now = utcnow()
    edited = make_item(session, title="Older but just edited", updated_at=now)
    edited.published_at = now - timedelta(days=9)
    newest = make_item(session, title="Newest", updated_at=now - timedelta(days=1))
    newest.published_at = now - timedelta(days=1)
    session.flush()

    by_newest = (await client.get("/api/v1/items")).json()["items"]
    by_updated = (await client.get("/api/v1/items", params={"sort": "updated"})).json()["items"]

    assert [i["title"] for i in by_newest] == ["Newest", "Older but just edited"]
    assert [i["title"] for i in by_updated] == ["Older but just edited", "Newest"]


async def test_item_detail_has_release_notes_and_timeline(client, session):
    pm = make_pm(session)
    item = make_item(session, title="Dark mode", release_notes="Now **everywhere**.")
    item = roadmap.get_item_for_staff(session, item.public_id)
    roadmap.move_item(session, item=item, stage=stage(session, "in-progress"), actor=pm)
    roadmap.move_item(session, item=item, stage=stage(session, "released"), actor=pm)
    session.flush()

    response = await client.get(f"/api/v1/items/{item.public_id}")

    assert response.status_code == 200
    data = response.json()
    assert data["id"] == item.public_id and data["stage"]["slug"] == "released" and data["released_at"]
    assert data["release_notes"] == "Now **everywhere**."
    assert data["release_notes_html"] == "<p>Now <strong>everywhere</strong>.</p>\n"
    moves = [(t["from_stage"] and t["from_stage"]["slug"], t["to_stage"]["slug"]) for t in data["timeline"]]
    assert moves == [(None, "planned"), ("planned", "in-progress"), ("in-progress", "released")]
    assert all(t["changed_at"] for t in data["timeline"])


async def test_release_notes_stay_private_until_the_release(client, session):
    item = make_item(session, title="Audit log", release_notes="Draft notes: launching with ACME")

    data = (await client.get(f"/api/v1/items/{item.public_id}")).json()

    assert data["release_notes"] == "" and data["release_notes_html"] == ""


async def test_missing_and_hidden_items_answer_the_same_404(client, session):
    hidden = make_item(session, title="Secret pricing", visibility=Visibility.internal)

    missing = await client.get("/api/v1/items/zzzzzzzz")
    hidden_response = await client.get(f"/api/v1/items/{hidden.public_id}")

    assert missing.status_code == hidden_response.status_code == 404
    assert missing.headers["content-type"] == "application/json"
    assert missing.json() == hidden_response.json() == {"error": "not_found",
                                                         "detail": "There is nothing at this address."}


async def test_invalid_parameters_are_explained(client):
    response = await client.get("/api/v1/items", params={"per_page": 101, "page": 0})

    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid" and set(body["fields"]) == {"per_page", "page"}


async def test_openapi_describes_the_items_api(client):
    spec = (await client.get("/openapi.json")).json()

    listing = spec["paths"]["/api/v1/items"]["get"]
    detail = spec["paths"]["/api/v1/items/{id}"]["get"]
    assert "roadmap items you may see" in listing["description"]
    assert {p["name"] for p in listing["parameters"]} == {"product", "tag", "stage", "sort", "page", "per_page"}
    assert set(detail["responses"]) == {"200", "301", "404", "422"}  # 301: a merged item
    assert set(spec["components"]["schemas"]["ErrorBody"]["properties"]) == {"error", "detail"}
    assert "internal_notes" not in str(spec)
