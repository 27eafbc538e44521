"""The last forms read through pydantic models (issue 9): the desk's RICE and weights forms and the one-field
action forms. Each model is checked for the sentences a person reads, and each form over HTTP: refused with
HTTP 422 (or sent back where it came from), the message next to the field, what was typed still there, never
a 500."""

from __future__ import annotations

import html
from decimal import Decimal

import pytest

from app.desk import service as desk
from app.forms import read_values
from tests.factories import make_admin, make_item
from tests.helpers.http import post_form, sign_in


def refused(response, *messages: str) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == 422, response.text[:500]
    page = html.unescape(response.text)
    for message in messages:
        assert message in page, message
    return page


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, display_name="Ada Admin")
    sign_in(client, session, user)
    return user


WEIGHTS = {"nice_to_have": "1", "important": "2", "critical": "3", "revenue_mode": "linear",
           "revenue_unit": "100,000", "revenue_cap": "3"}


class TestWeightsUpdate:
    def test_the_messages(self):
        form = read_values(desk.WeightsUpdate, {"nice_to_have": "lots", "important": "1.2345", "critical": "-1",
                                                "revenue_mode": "quadratic", "revenue_unit": "0",
                                                "revenue_cap": "1e3"})
        assert form.errors == {
            "nice_to_have": desk.WEIGHT_MESSAGE, "important": desk.WEIGHT_MESSAGE, "critical": desk.WEIGHT_MESSAGE,
            "revenue_mode": "Choose how revenue weighs votes.",
            "revenue_unit": "A revenue of at least 1, such as 100000.",
            "revenue_cap": "A factor from 1 to 1000, such as 3.",
        }
        assert desk.WEIGHT_MESSAGE == "A number from 0 to 1000, with at most three decimals, such as 2 or 1.5."
        empty = read_values(desk.WeightsUpdate, dict.fromkeys(WEIGHTS, ""))
        assert set(empty.errors) == set(WEIGHTS)  # nothing typed is not a weight of 0

    def test_what_people_type(self):
        form = read_values(desk.WeightsUpdate, {**WEIGHTS, "critical": " 2.5 ", "revenue_unit": "1,000,000"})
        assert form.data is not None
        weights = form.data.weights()
        assert (weights.critical, weights.revenue_unit, weights.revenue_mode) == (
            Decimal("2.5"), Decimal(1_000_000), desk.RevenueMode.linear)

    async def test_the_form_keeps_what_was_typed(self, client, session, admin):
        long = "9" * 41
        response = await post_form(client, "/admin/desk/weights", {**WEIGHTS, "critical": "lots",
                                                                    "revenue_cap": long},
                                   page="/admin/desk/weights")
        page = refused(response, desk.WEIGHT_MESSAGE, "A factor from 1 to 1000, such as 3.")
        assert 'value="lots"' in page and f'value="{long}"' in page and 'value="100,000"' in page


class TestRiceUpdate:
    CONFIDENCE = "A whole percentage from 1 to 100, such as 80 (or leave it empty)."
    EFFORT = "Person-months from 0.01 to 9999, such as 2 or 0.5 (or leave it empty)."

    def test_the_messages(self):
        for confidence, effort in (("180", "-1"), ("80.5", "0.001"), ("eighty", "two"), ("0", "10000")):
            form = read_values(desk.RiceUpdate, {"rice_confidence": confidence, "effort": effort})
            assert form.errors == {"rice_confidence": self.CONFIDENCE, "effort": self.EFFORT}, (confidence, effort)

    def test_what_people_type(self):
        form = read_values(desk.RiceUpdate, {"rice_confidence": "80 %", "effort": "0.5"})
        assert form.data is not None and (form.data.rice_confidence, form.data.effort) == (80, Decimal("0.5"))
        cleared = read_values(desk.RiceUpdate, {"rice_confidence": " ", "effort": ""})
        assert cleared.data is not None and (cleared.data.rice_confidence, cleared.data.effort) == (None, None)

    async def test_the_form_keeps_what_was_typed(self, client, session, admin):
        item = make_item(session)
        response = await post_form(client, f"/admin/desk/items/{item.public_id}/rice",
                                   {"rice_confidence": "eighty", "effort": "x" * 50}, page="/admin/desk")
        page = refused(response, self.CONFIDENCE, self.EFFORT)
        assert 'value="eighty"' in page and "x" * 50 in page
        assert item.rice_confidence is None and item.effort is None
