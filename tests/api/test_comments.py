"""GET /api/v1/items/{id}/comments: an item's discussion, a page of threads at a time, by cursor."""

from __future__ import annotations

from app.accounts.viewer import Viewer
from app.discussion import service as discussion
from app.roadmap.models import Visibility
from tests.discussion.helpers import comment, many_comments
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import sign_in


async def read_all(client, item, **params):  # type: ignore[no-untyped-def]
    """Every page, following next_cursor: (pages, the thread ids in order)."""
    pages, seen, after = [], [], None
    while True:
        response = await client.get(f"/api/v1/items/{item.public_id}/comments",
                                    params={**params, **({"after": after} if after else {})})
        assert response.status_code == 200, response.text
        page = response.json()
        pages.append(page)
        seen += [t["id"] for t in page["comments"]]
        after = page["next_cursor"]
        if after is None:
            return pages, seen
        assert len(pages) < 20


async def test_pages_through_every_thread_exactly_once_with_replies_nested(client, session):
    item, ann, pm = make_item(session), make_user(session, display_name="Ann Example"), make_pm(session)
    rows = many_comments(session, item, ann, 120)
    replies = [comment(session, item, make_user(session), f"Reply {n}", parent=rows[n]) for n in (0, 60, 119)]
    answer = comment(session, item, pm, "We are on it")
    discussion.pin_comment(session, actor=pm, comment=answer)
    for hidden in rows[30:35]:
        discussion.hide_comment(session, actor=pm, comment=hidden)

    pages, seen = await read_all(client, item)

    visible = [c.public_id for c in rows if c not in rows[30:35]]
    assert seen == visible and len(seen) == len(set(seen))  # each once, oldest first
    assert [len(p["comments"]) for p in pages] == [50, 50, 15]
    assert all(p["pinned"]["id"] == answer.public_id and p["total"] == 115 + 3 + 1 for p in pages)
    assert answer.public_id not in seen
    by_id = {t["id"]: t for p in pages for t in p["comments"]}
    for n, reply in zip((0, 60, 119), replies, strict=True):
        assert [r["id"] for r in by_id[rows[n].public_id]["replies"]] == [reply.public_id]
    first = by_id[rows[0].public_id]
    assert first["author"] == "Ann Example" and first["body"] == "Comment 1"
    assert first["body_html"] == "<p>Comment 1</p>\n" and not first["official"] and not first["hidden"]
    assert pages[0]["pinned"]["official"] and pages[0]["pinned"]["replies"] == []


async def test_smaller_pages_and_staff_who_also_receive_hidden_comments(client, session):
    item, pm = make_item(session), make_pm(session)
    rows = many_comments(session, item, make_user(session), 12)
    discussion.hide_comment(session, actor=pm, comment=rows[3])
    sign_in(client, session, pm)

    pages, seen = await read_all(client, item, per_page=5)

    assert seen == [c.public_id for c in rows] and [len(p["comments"]) for p in pages] == [5, 5, 2]
    assert [t["hidden"] for t in pages[0]["comments"]] == [False, False, False, True, False]
    assert pages[0]["pinned"] is None


async def test_the_cursor_holds_its_place_while_people_comment_and_delete(client, session):
    item, ann = make_item(session), make_user(session)
    rows = many_comments(session, item, ann, 8)
    url = f"/api/v1/items/{item.public_id}/comments"
    first = (await client.get(url, params={"per_page": 4})).json()
    assert first["next_cursor"] == rows[3].public_id

    # Between two requests an earlier thread is deleted and a new one posted.
    discussion.delete_comment(session, viewer=Viewer(user=ann), comment=rows[1])
    late = comment(session, item, make_user(session), "Posted meanwhile")
    second = (await client.get(url, params={"per_page": 4, "after": first["next_cursor"]})).json()
    assert [t["id"] for t in second["comments"]] == [c.public_id for c in rows[4:8]]
    third = (await client.get(url, params={"per_page": 4, "after": second["next_cursor"]})).json()
    assert [t["id"] for t in third["comments"]] == [late.public_id] and third["next_cursor"] is None


async def test_a_bad_cursor_is_422_and_a_hidden_item_is_404(client, session):
    item, other = make_item(session), make_item(session)
    rows = many_comments(session, item, make_user(session), 3)
    elsewhere = many_comments(session, other, make_user(session), 1, prefix="Elsewhere")
    url = f"/api/v1/items/{item.public_id}/comments"
    for cursor in ("nosuchcomment", elsewhere[0].public_id):
        refused = await client.get(url, params={"after": cursor})
        assert refused.status_code == 422 and refused.json()["error"] == "invalid"
        assert "after" in refused.json()["fields"]
    reply = comment(session, item, make_user(session), "A reply", parent=rows[0])
    assert (await client.get(url, params={"after": reply.public_id})).status_code == 422

    internal = make_item(session, visibility=Visibility.internal)
    comment(session, internal, make_pm(session), "Internal remark")
    missing = await client.get("/api/v1/items/nosuch99/comments")
    hidden = await client.get(f"/api/v1/items/{internal.public_id}/comments")
    assert hidden.status_code == missing.status_code == 404 and hidden.json() == missing.json()


async def test_a_discussion_without_comments(client, session):
    item = make_item(session)
    body = (await client.get(f"/api/v1/items/{item.public_id}/comments")).json()
    assert body == {"pinned": None, "comments": [], "total": 0, "next_cursor": None}
