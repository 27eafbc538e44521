"""The staff items list sorts by weighted demand as the desk computes it (all time), heaviest first, and by votes;
activating the sorted column reverses it."""

from __future__ import annotations

import re

import pytest

from tests.desk.helpers import TITLES, expected_desk, set_up
from tests.factories import make_admin
from tests.helpers.http import sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


async def test_the_items_list_sorts_by_weighted_demand(client, session, admin):
    await set_up(client, session)
    expected = expected_desk("all")
    page = await client.get("/admin/items?sort=demand")
    assert page.status_code == 200
    rows = re.findall(r'<th scope="row"><a href="/admin/items/[^"]+">([^<]+)</a></th>(.*?)</tr>', page.text, re.S)
    titles = [t for t, _ in rows]
    want = sorted(("X", "Y", "W"), key=lambda k: -expected[k]["demand"])
    assert [t for t in titles if t in {TITLES[k] for k in want}] == [TITLES[k] for k in want]
    shown = [float(re.findall(r'<td class="num">(?:<a [^>]+>)?([0-9.]+)', cells)[1]) for _, cells in rows]
    assert shown == sorted(shown, reverse=True)  # the column and the order agree, other items included
    assert re.search(r'aria-sort="descending"><a href="\?sort=demand&amp;dir=asc">Weighted demand', page.text)

    # Activating the sorted column's header reverses it, like the desk's sort links, and back.
    for sort, column in (("demand", 1), ("votes", 0)):
        page = await client.get(f"/admin/items?sort={sort}&dir=asc")
        rows = re.findall(r'<th scope="row"><a href="/admin/items/[^"]+">([^<]+)</a></th>(.*?)</tr>', page.text, re.S)
        shown = [float(re.findall(r'<td class="num">(?:<a [^>]+>)?([0-9.]+)', cells)[column]) for _, cells in rows]
        assert len(set(shown)) > 1 and shown == sorted(shown)
        assert re.search(fr'aria-sort="ascending"><a href="\?sort={sort}">', page.text)
    # The votes sort is still there, and an unknown sort falls back to the latest changed.
    assert (await client.get("/admin/items?sort=votes")).status_code == 200
    assert (await client.get("/admin/items?sort=sideways")).status_code == 200
