"""The desk through the API: every figure equals the desk computed independently from the votes (the world of
tests/desk/helpers.py), and equals what the page shows; one item's demand; the RICE estimate a read-write
token sets."""

from __future__ import annotations

from decimal import Decimal

import pytest
from sqlalchemy import select

from app.audit.models import AuditEvent
from app.roadmap.models import Item, Visibility
from app.voting import service as voting
from app.voting.models import Importance
from tests.desk.helpers import (
    CRIT,
    MID,
    NICE,
    ORGS,
    PEOPLE,
    RICE,
    SEGMENTS,
    TITLES,
    WINDOWS,
    assert_matches,
    csv_rows,
    expected_desk,
    final_votes,
    page_rows,
    revenue_factor,
    set_up,
)
from tests.factories import make_admin, make_item, make_product
from tests.feedback.helpers import make_customer, make_organisation, make_segment
from tests.helpers.http import sign_in
from tests.helpers.tokens import bearer, create_token


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def api_rows(body: dict) -> dict[str, dict[str, object]]:  # type: ignore[type-arg]
    """The API's rows in the shape the expected desk has."""
    return {r["title"]: {
        "voters": r["voters"], "organisations": r["organisations"],
        "mix": (r["importance"]["nice_to_have"], r["importance"]["important"], r["importance"]["critical"]),
        "demand": r["weighted_demand"], "revenue": int(r["revenue"]), "rice": r["rice"], "feedback": r["feedback"],
        "trend": r["trend"], "reach": r["reach"], "impact": r["impact"],
    } for r in body["rows"]}


async def api_get(client, path: str, token: str):  # type: ignore[no-untyped-def]
    """An API call carrying only the token: no cookie of the signed-in page."""
    saved = dict(client.cookies)
    client.cookies.clear()
    try:
        return await client.get(path, headers=bearer(token))
    finally:
        for name, value in saved.items():
            client.cookies.set(name, value)


class TestEveryFigureThroughTheApi:
    @pytest.mark.parametrize("window", list(WINDOWS))
    async def test_the_api_gives_the_figures_the_votes_give_and_the_page_shows(self, client, session, admin, window):
        world = await set_up(client, session)
        token = await create_token(client)
        response = await api_get(client, f"/api/v1/desk?window={window}", token)
        assert response.status_code == 200, response.text
        body = response.json()
        expected = expected_desk(window, rice=RICE)
        rows = api_rows(body)
        assert_matches(rows, expected)
        for key, want in expected.items():
            got = rows[TITLES[key]]
            assert got["reach"] == want["reach"]
            # As the page and the CSVs show them: 2 decimals.
            assert got["impact"] == (None if want["impact"] is None else round(want["impact"], 2))
            assert got["demand"] == round(want["demand"], 2)
        assert TITLES["Z"] not in rows  # merged into X
        # The page's order and the API's are the same.
        page = await client.get(f"/admin/desk?window={window}")
        assert [r["title"] for r in body["rows"]] == [t for t, _ in page_rows(page.text)]
        x = next(r for r in body["rows"] if r["title"] == TITLES["X"])
        assert (x["id"], x["rice_confidence"], x["effort"], x["stage"]) == (world.items["X"].public_id, 80, 2.0, "Planned")
        weights = body["weights"]
        assert (weights["nice_to_have"], weights["important"], weights["critical"], weights["revenue_mode"]) == (
            1.0, 2.0, 4.0, "linear")
        assert {s["slug"]: s["weight"] for s in weights["segments"]} == {k: float(v) for k, v in SEGMENTS.items()}
        assert (body["window"], body["sort"], body["dir"], body["total"]) == (window, "demand", "desc", len(expected))

    async def test_segment_organisation_product_and_sort_filter_as_the_page_does(self, client, session, admin):
        world = await set_up(client, session)
        token = await create_token(client)
        for params, expected in [
            ("window=all&segment=enterprise", expected_desk("all", segment="enterprise", rice=RICE)),
            ("window=all&segment=smb", expected_desk("all", segment="smb", rice=RICE)),
            (f"window=90&organisation={world.orgs['beta'].id}", expected_desk("90", org="beta", rice=RICE)),
        ]:
            response = await api_get(client, f"/api/v1/desk?{params}", token)
            assert_matches(api_rows(response.json()), expected)
        response = await api_get(client, f"/api/v1/desk?product={world.product_slugs['two']}", token)
        assert [r["title"] for r in response.json()["rows"]] == [TITLES["Y"]]
        response = await api_get(client, "/api/v1/desk?window=all&sort=voters&dir=asc", token)
        assert [r["title"] for r in response.json()["rows"]] == [TITLES["W"], TITLES["Y"], TITLES["X"]]
        response = await api_get(client, "/api/v1/desk?window=all&sort=age&dir=asc", token)
        ages = [r["age_days"] for r in response.json()["rows"]]
        assert ages == sorted(ages) and ages[-1] == 10  # the youngest first: X is ten days old, the others new
        response = await api_get(client, "/api/v1/desk?window=all&sort=age&dir=desc", token)
        assert response.json()["rows"][0]["title"] == TITLES["X"]
        bad = await api_get(client, "/api/v1/desk?window=7&sort=nonsense", token)
        assert bad.status_code == 422 and set(bad.json()["fields"]) >= {"window", "sort"}


class TestPaging:
    async def test_a_page_past_the_last_answers_with_no_rows_so_a_script_paging_until_empty_stops(
            self, client, session, admin):
        product = make_product(session)
        for n in range(3):
            make_item(session, product=product, title=f"Item {n}")
        token = await create_token(client)
        first = (await api_get(client, "/api/v1/desk", token)).json()
        assert (len(first["rows"]), first["page"], first["pages"], first["total"]) == (3, 1, 1, 3)
        response = await api_get(client, "/api/v1/desk?page=2", token)
        assert response.status_code == 200
        body = response.json()
        assert (body["rows"], body["page"], body["pages"], body["total"]) == ([], 2, 1, 3)

    async def test_asked_again_unchanged_it_answers_304_and_after_a_vote_the_new_figures(self, client, session, admin):
        item = make_item(session, title="Tagged")
        token = await create_token(client)
        first = await api_get(client, "/api/v1/desk", token)
        again = await api_get(client, "/api/v1/desk", token)
        assert first.json()["computed_at"] != again.json()["computed_at"]  # read afresh each time
        tag = first.headers["etag"]
        assert again.headers["etag"] == tag and first.headers["cache-control"] == "private, no-cache"
        saved = dict(client.cookies)
        client.cookies.clear()
        unchanged = await client.get("/api/v1/desk", headers={**bearer(token), "if-none-match": tag})
        assert unchanged.status_code == 304 and unchanged.content == b""
        voting.cast_vote(session, item=item, user=make_customer(session), importance=Importance.critical)
        session.flush()
        changed = await client.get("/api/v1/desk", headers={**bearer(token), "if-none-match": tag})
        assert changed.status_code == 200 and changed.headers["etag"] != tag
        assert changed.json()["rows"][0]["voters"] == 1
        for name, value in saved.items():
            client.cookies.set(name, value)


class TestDemandOfOneItem:
    async def test_every_person_with_what_their_vote_weighs(self, client, session, admin):
        world = await set_up(client, session)
        token = await create_token(client)
        response = await api_get(client, f"/api/v1/items/{world.items['X'].public_id}/demand?window=all", token)
        assert response.status_code == 200, response.text
        body = response.json()
        people = {p["email"]: p for p in body["people"]}
        assert set(people) == {f"{p}@example.com" for p in final_votes()["X"]}
        weight = {NICE: 1.0, MID: 2.0, CRIT: 4.0}
        for person, (importance, _days) in final_votes()["X"].items():
            org = PEOPLE[person][1]
            seg = ORGS[org][0] if org else None
            want = weight[importance] * float(SEGMENTS[seg] if seg else 1) * revenue_factor(
                "linear", ORGS[org][1] if org else 0)
            got = people[f"{person}@example.com"]
            assert got["weighted_demand"] == round(want, 2), person
            assert got["importance"] == importance.key
        assert people["pat@example.com"]["channel"] == "captured"
        assert people["gus@example.com"]["merged_from"] == TITLES["Z"]
        assert [p["weighted_demand"] for p in body["people"]] == sorted(
            (p["weighted_demand"] for p in body["people"]), reverse=True)
        expected = expected_desk("all", rice=RICE)["X"]
        assert api_rows({"rows": [body["row"]]})[TITLES["X"]]["voters"] == expected["voters"]
        assert sum(o["weighted_demand"] for o in body["organisations"]) + sum(
            p["weighted_demand"] for p in body["people"] if not p["organisation"]) == pytest.approx(expected["demand"],
                                                                                        abs=0.01 * len(body["people"]))
        missing = await api_get(client, "/api/v1/items/nosuchitem/demand", token)
        assert missing.status_code == 404 and missing.json()["error"] == "not_found"


class TestEstimate:
    async def test_a_read_write_token_sets_the_estimate_audited_as_its_owner(self, client, session, admin):
        world = await set_up(client, session)
        w = world.items["W"]
        read = await create_token(client, name="Reader")
        write = await create_token(client, name="Writer", scope="write")
        client.cookies.clear()
        refused = await client.put(f"/api/v1/items/{w.public_id}/estimate", headers=bearer(read),
                                   json={"rice_confidence": 50, "effort": 1.5})
        assert refused.status_code == 403 and "read-only" in refused.json()["detail"]
        assert session.scalar(select(Item.rice_confidence).where(Item.id == w.id)) is None
        done = await client.put(f"/api/v1/items/{w.public_id}/estimate", headers=bearer(write),
                                json={"rice_confidence": 50, "effort": 1.5})
        assert done.status_code == 200, done.text
        assert done.json() == {"id": w.public_id, "rice_confidence": 50, "effort": 1.5, "changed": True}
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "item.estimated",
                                                         AuditEvent.entity_id == w.public_id)).one()
        assert event.actor_id == admin.id
        bad = await client.put(f"/api/v1/items/{w.public_id}/estimate", headers=bearer(write),
                               json={"rice_confidence": 500, "effort": -1})
        assert bad.status_code == 422


class TestWhatAStaffTokenSees:
    async def test_a_token_reads_items_as_staff_do_internal_and_drafts_included(self, client, session, admin):
        product = make_product(session)
        internal = make_item(session, product=product, title="Staff-only plan", visibility=Visibility.internal)
        draft = make_item(session, product=product, title="Unpublished draft", published=False)
        token = await create_token(client)
        client.cookies.clear()
        for item in (internal, draft):
            assert (await client.get(f"/api/v1/items/{item.public_id}")).status_code == 404
            response = await client.get(f"/api/v1/items/{item.public_id}", headers=bearer(token))
            assert response.status_code == 200 and response.json()["title"] == item.title
        listing = await client.get("/api/v1/items?per_page=100", headers=bearer(token))
        assert {internal.public_id, draft.public_id} <= {i["id"] for i in listing.json()["items"]}


class TestRounding:
    """Exact half-cents round half up alike on the page, in the CSV and in the API, whatever way the float sum
    of the weights happens to be stored (145.345 is 145.34499… as a float, 427.365 is 427.36500…)."""

    @pytest.mark.parametrize(("segment_weight", "shown"), [
        ("145.345", "145.35"), ("427.365", "427.37"), ("145.344", "145.34"), ("0.005", "0.01"),
    ])
    async def test_half_a_cent_rounds_up_everywhere(self, client, session, admin, segment_weight, shown):  # type: ignore[no-untyped-def]
        segment = make_segment(session, "Halves")
        segment.weight = Decimal(segment_weight)
        item = make_item(session, title="Half cents")
        voting.cast_vote(session, item=item, user=make_customer(session, make_organisation(session, segment=segment)),
                         importance=Importance.nice_to_have)
        session.flush()

        [(_, row)] = page_rows((await client.get("/admin/desk")).text)
        assert f"{row['demand']:.2f}" == shown
        [csv_row] = csv_rows((await client.get("/admin/desk/export.csv")).content)
        assert csv_row["Weighted demand"] == shown
        token = await create_token(client)
        [api_row] = (await api_get(client, "/api/v1/desk", token)).json()["rows"]
        assert f"{api_row['weighted_demand']:.2f}" == shown and api_row["weighted_demand"] == float(shown)
        page = await client.get(f"/admin/desk/items/{item.public_id}")
        assert f"<strong>{shown}</strong>" in page.text or f">{shown}<" in page.text
        assert "rounded half up on its exact value" in page.text
