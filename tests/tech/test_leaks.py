"""Internal only: an initiative's title, owner, tracker keys, titles and addresses appear on no customer surface;
the item page shows a plain percentage, and only when a PM turned it on."""

from __future__ import annotations

from app.tech.models import BacklogLink, Initiative, InitiativeStatus, ItemDelivery
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import sign_in

SECRET = "Quokkaplatform"


def _world(session, *, show: bool):  # type: ignore[no-untyped-def]
    owner = make_pm(session, email="owner@example.com", display_name=f"{SECRET} Owner")
    item = make_item(session, title="Faster exports", summary="Exports in minutes")
    initiative = Initiative(title=f"{SECRET} initiative", description=f"{SECRET} plan", owner_id=owner.id,
                            status=InitiativeStatus.active, items=[item])
    session.add(initiative)
    session.flush()
    session.add_all([
        BacklogLink(initiative_id=initiative.id, kind="jira", key="QKP-77", url=f"https://acme.atlassian.net/browse/QKP-77?{SECRET}",
                    title=f"{SECRET} issue title", status="Done", done=True, started=True),
        BacklogLink(item_id=item.id, kind="github", key="quokka/secretrepo#5", url="https://github.com/quokka/secretrepo/issues/5",
                    title=f"{SECRET} other", status="open", done=False, started=False),
        ItemDelivery(item_id=item.id, show_progress=show),
    ])
    session.flush()
    return item


def surfaces(item) -> list[str]:  # type: ignore[no-untyped-def]
    return ["/", "/?view=horizon", f"/search?q={SECRET.lower()}", "/search?q=QKP-77", "/changelog",
            "/changelog.atom", "/sitemap.xml", "/api/v1/items", f"/api/v1/items/{item.public_id}", item.path]


# The search pages echo the query itself: look for the texts around the word, and the keys' addresses.
TRACES = [f"{SECRET} initiative", f"{SECRET} plan", f"{SECRET} Owner", f"{SECRET} issue title", f"{SECRET} other",
          "browse/QKP-77", "quokka/secretrepo", "Done", "50%"]


async def test_no_customer_surface_shows_the_technology_roadmap(client, session):
    item = _world(session, show=True)
    for viewer in (None, make_user(session, email="cu@example.com")):
        if viewer is not None:
            sign_in(client, session, viewer)
        for url in surfaces(item):
            response = await client.get(url)
            assert response.status_code == 200, url
            shown = [t for t in TRACES if t in response.text]
            if url == item.path:  # the bar, and nothing else
                assert shown == ["50%"], url
            else:
                assert shown == [], url
    page = (await client.get(item.path)).text
    assert "About 50% delivered" in page


async def test_the_bar_shows_only_when_turned_on(client, session):
    item = _world(session, show=False)
    assert "delivered" not in (await client.get(item.path)).text
