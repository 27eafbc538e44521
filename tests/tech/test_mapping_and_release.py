"""A released item and its links: newer tracker news (an issue reopened after the mapping released the item)
no longer shows customers "about 50% delivered" next to "Released — voting is closed", and staff see the
regression on the item's page and its initiative's. A stage mapping saved after the work started applies at
once, as the PM's move."""

from __future__ import annotations

import json

import pytest

from app.audit.models import AuditEvent
from app.roadmap.models import StageChange
from app.tech.models import BacklogLink, HookKind, Initiative, ItemDelivery, initiative_items
from tests.factories import make_item, make_pm, stage
from tests.helpers.http import post_form, sign_in
from tests.helpers.trackers import github_headers, link, make_hook, payload


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


def _reopened_later() -> bytes:
    """GitHub's "reopened", newer than the "closed" fixture (2026-12-03T08:00Z)."""
    data = json.loads(payload("github_issue_reopened.json"))
    data["issue"]["updated_at"] = "2026-12-03T09:00:00Z"
    return json.dumps(data).encode()


async def test_a_released_item_shows_no_bar_and_staff_see_the_regression(client, session, pm, settings):
    hook, secret = make_hook(session, pm, HookKind.github, settings)
    item = make_item(session, stage_slug="planned", title="Exports to S3")
    link(session, item, "github", "acme/app#88")
    link(session, item, "github", "acme/app#89", status="closed", done=True, started=True)
    initiative = Initiative(title="Export pipeline", description="", items=[])
    session.add(initiative)
    session.flush()
    session.execute(initiative_items.insert().values(initiative_id=initiative.id, item_id=item.id))
    session.add(ItemDelivery(item_id=item.id, show_progress=True, done_stage_id=stage(session, "released").id))
    session.commit()
    assert "About 50% delivered" in (await client.get(item.path)).text  # while under way, customers see it
    closed = payload("github_issue_closed.json")
    moved = await client.post(f"/hooks/github/{hook.public_id}", content=closed,
                              headers=github_headers(secret, closed, delivery="c"))
    assert "to Released" in moved.json()["detail"]
    reopened = _reopened_later()
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=reopened,
                               headers=github_headers(secret, reopened, delivery="r"))
    assert answer.json()["outcome"] == "matched"
    page = (await client.get(item.path)).text
    assert "Released — voting is closed" in page
    assert "delivered" not in page and "<progress" not in page
    sign_in(client, session, pm)
    admin = (await client.get(f"/admin/items/{item.public_id}")).text
    assert "Regression:" in admin and "Released, but 1 of 2 linked issues is not done" in admin
    assert "Regression" in (await client.get(f"/admin/tech/{initiative.id}")).text


async def test_a_declined_item_shows_no_bar(client, session, pm):
    item = make_item(session, stage_slug="declined", title="Fax exports")
    link(session, item, "github", "acme/app#88")
    session.add(ItemDelivery(item_id=item.id, show_progress=True))
    session.commit()
    page = (await client.get(item.path)).text
    assert "voting is closed" in page and "delivered" not in page
    sign_in(client, session, pm)
    assert "Regression" not in (await client.get(f"/admin/items/{item.public_id}")).text  # declined: expected


async def test_a_mapping_saved_after_work_started_applies_at_once_as_the_pms_move(client, session, pm):
    item = make_item(session, stage_slug="planned", title="Exports to S3")
    link(session, item, "github", "acme/app#88", status="open", started=True)
    session.commit()
    sign_in(client, session, pm)
    admin = f"/admin/items/{item.public_id}"
    progress = stage(session, "in-progress")
    saved = await post_form(client, f"{admin}/delivery", {"started_stage_id": str(progress.id)}, page=admin)
    assert saved.status_code == 303
    page = (await client.get(admin)).text
    assert f"Moved “Exports to S3” from Planned to {progress.name}" in page
    session.expire_all()
    assert session.get(type(item), item.id).stage_id == progress.id
    change = session.query(StageChange).filter_by(item_id=item.id, to_stage_id=progress.id).one()
    assert change.changed_by_id == pm.id  # the PM's change: their save made it
    assert session.query(AuditEvent).filter_by(action="item.moved").one().actor_id == pm.id
    # Saving again moves nothing more; a done rule with work not all done waits for the deliveries.
    again = await post_form(client, f"{admin}/delivery", {"started_stage_id": str(progress.id),
                                                          "done_stage_id": str(stage(session, "released").id)},
                            page=admin)
    assert again.status_code == 303
    session.expire_all()
    assert session.get(type(item), item.id).stage_id == progress.id
    assert session.query(BacklogLink).filter_by(item_id=item.id).one().done is False
