"""Merging a duplicate item B into item A: each voter counted once, the higher importance winning,
comments, feedback and follows moving along, B's address leading to A, and an undo that restores B
exactly while A keeps what happened to it since."""

from __future__ import annotations

import re
import secrets
from datetime import timedelta

import pytest
from sqlalchemy import func, select, update

from app.accounts.viewer import ANONYMOUS, Viewer
from app.audit.models import AuditEvent
from app.db import utcnow
from app.discussion import service as discussion
from app.discussion.models import Comment
from app.errors import Conflict, NotFound
from app.feedback.models import Feedback, FeedbackKind
from app.organisations.models import Organisation, Segment
from app.roadmap import merge as merging
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Visibility
from app.voting import service as voting
from app.voting.models import CaptureSource, Follow, Importance, Merge, Vote
from tests.factories import make_item, make_pm, make_product, make_user
from tests.helpers.http import post_form, sign_in

NICE, IMPORTANT, CRITICAL = Importance.nice_to_have, Importance.important, Importance.critical


# --- helpers ----------------------------------------------------------------------------------------------


def vote(session, item, user, importance=IMPORTANT, **kwargs):  # type: ignore[no-untyped-def]
    voting.cast_vote(session, item=item, user=user, importance=importance, **kwargs)


def comment(session, item, author, *, pinned=False, official=False, parent=None):  # type: ignore[no-untyped-def]
    row = Comment(public_id=secrets.token_hex(6), item_id=item.id, author_id=author.id, body="A comment",
                  is_pinned=pinned, is_official=official, parent_id=parent.id if parent else None)
    session.add(row)
    session.flush()
    return row


def feedback(session, item, author):  # type: ignore[no-untyped-def]
    row = Feedback(kind=FeedbackKind.reason, item_id=item.id, product_id=item.product_id, author_id=author.id,
                   body="We need this for the night shift.")
    session.add(row)
    session.flush()
    return row


def votes_of(session, item):  # type: ignore[no-untyped-def]
    """{user_id: importance} of the item's vote rows."""
    return dict(session.execute(select(Vote.user_id, Vote.importance).where(Vote.item_id == item.id)).all())


def counters(session, item):  # type: ignore[no-untyped-def]
    return session.execute(select(Item.vote_count, Item.trend_count).where(Item.id == item.id)).one()


def rows_count(session, item):  # type: ignore[no-untyped-def]
    since = utcnow() - timedelta(days=voting.TREND_DAYS)
    total = session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id))
    recent = session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id,
                                                                        Vote.created_at >= since))
    return total, recent


def snapshot(session, *items):  # type: ignore[no-untyped-def]
    """Everything a merge touches on these items, as plain values (the vote id aside, which SQLite may reuse)."""
    ids = [i.id for i in items]
    return {
        "votes": set(session.execute(select(
            Vote.item_id, Vote.user_id, Vote.importance, Vote.created_at, Vote.updated_at, Vote.captured_by_id,
            Vote.source, Vote.source_url).where(Vote.item_id.in_(ids))).all()),
        "comments": set(session.execute(select(Comment.id, Comment.item_id, Comment.is_pinned)
                                        .where(Comment.item_id.in_(ids))).all()),
        "feedback": set(session.execute(select(Feedback.id, Feedback.item_id).where(Feedback.item_id.in_(ids))).all()),
        "follows": set(session.execute(select(Follow.item_id, Follow.user_id, Follow.created_at)
                                       .where(Follow.item_id.in_(ids))).all()),
        "counts": {i.id: tuple(counters(session, i)) for i in items},
        "merged_into": {i.id: session.scalar(select(Item.merged_into_id).where(Item.id == i.id)) for i in items},
    }


@pytest.fixture
def duplicates(session):  # type: ignore[no-untyped-def]
    """A and its duplicate B. Ann voted on both (nice to have on A, critical on B, through a PM's call),
    Bob only on A, Cleo and Dan only on B (Dan's vote is old, out of the 30-day trend)."""
    product = make_product(session)
    a = make_item(session, product=product, title="Shift swaps")
    b = make_item(session, product=product, title="Swap shifts with a colleague")
    pm = make_pm(session, display_name="Petra PM")
    ann, bob, cleo, dan = (make_user(session, display_name=n) for n in ("Ann", "Bob", "Cleo", "Dan"))
    vote(session, a, ann, NICE)
    vote(session, a, bob, CRITICAL)
    vote(session, b, ann, CRITICAL, captured_by=pm, source=CaptureSource.call, source_url="https://crm.example/1")
    vote(session, b, cleo, IMPORTANT)
    vote(session, b, dan, NICE)
    session.execute(update(Vote).where(Vote.item_id == b.id, Vote.user_id == dan.id)
                    .values(created_at=utcnow() - timedelta(days=45), updated_at=utcnow() - timedelta(days=40)))
    voting.reconcile(session)  # Dan's vote leaves B's trend
    pinned_a = comment(session, a, pm, pinned=True, official=True)
    pinned_b = comment(session, b, pm, pinned=True, official=True)
    thread_b = comment(session, b, cleo)
    reply_b = comment(session, b, dan, parent=thread_b)
    note_b = feedback(session, b, cleo)
    session.refresh(a)
    session.refresh(b)
    return {"a": a, "b": b, "pm": pm, "ann": ann, "bob": bob, "cleo": cleo, "dan": dan, "pinned_a": pinned_a,
            "pinned_b": pinned_b, "comments_b": {pinned_b.id, thread_b.id, reply_b.id}, "note_b": note_b}


# --- merging ----------------------------------------------------------------------------------------------


def test_merge_counts_each_voter_once_and_the_higher_importance_wins(session, duplicates):
    d = duplicates
    a, b = d["a"], d["b"]
    preview = merging.preview_merge(session, source=b, target=a)
    assert (preview.votes, preview.overlap, preview.raised, preview.result_votes) == (3, 1, 1, 4)

    merge = merging.merge_items(session, source=b, target=a, actor=d["pm"])

    # A counts the distinct voters of A and B; Ann counts once, with the critical she gave B.
    assert votes_of(session, a) == {d["ann"].id: CRITICAL, d["bob"].id: CRITICAL, d["cleo"].id: IMPORTANT,
                                    d["dan"].id: NICE}
    assert votes_of(session, b) == {}
    assert tuple(counters(session, a)) == rows_count(session, a) == (4, 3)  # Dan's old vote is not trending
    assert tuple(counters(session, b)) == rows_count(session, b) == (0, 0)
    assert a.vote_count == 4 and b.vote_count == 0  # the objects in hand show it too
    assert voting.reconcile(session, fix=False) == []
    # What undo needs: Ann's dropped vote in full, and A's previous importance.
    record = merge.record
    (dropped,) = record["dropped_votes"]
    assert (dropped["user_id"], dropped["importance"], dropped["captured_by_id"], dropped["source"],
            dropped["source_url"]) == (d["ann"].id, CRITICAL, d["pm"].id, "call", "https://crm.example/1")
    assert [(r["user_id"], r["from"], r["to"]) for r in record["raised_votes"]] == [(d["ann"].id, NICE, CRITICAL)]
    assert len(record["moved_votes"]) == 2


def test_comments_feedback_and_follows_move_with_one_pin_on_top(session, duplicates):
    d = duplicates
    a, b = d["a"], d["b"]
    voting.follow(session, item=b, user=d["pm"])  # follows only B
    merge = merging.merge_items(session, source=b, target=a, actor=d["pm"])

    on_a = dict(session.execute(select(Comment.id, Comment.is_pinned).where(Comment.item_id == a.id)).all())
    assert d["comments_b"] <= set(on_a)
    assert [cid for cid, pinned in on_a.items() if pinned] == [d["pinned_a"].id]  # A's pin stays the only one
    assert merge.record["unpinned_comments"] == [d["pinned_b"].id]
    assert session.scalar(select(Feedback.item_id).where(Feedback.id == d["note_b"].id)) == a.id
    followers_a = set(session.scalars(select(Follow.user_id).where(Follow.item_id == a.id)))
    assert followers_a == {d[n].id for n in ("ann", "bob", "cleo", "dan", "pm")}
    assert session.scalar(select(func.count()).select_from(Follow).where(Follow.item_id == b.id)) == 0
    # Ann followed both: her follow of A stays, B's is dropped (and recorded for undo).
    assert [f["user_id"] for f in merge.record["dropped_follows"]] == [d["ann"].id]
    assert set(merge.record["moved_follows"]) == {d[n].id for n in ("cleo", "dan", "pm")}


def test_a_merged_item_leaves_the_roadmap_and_is_audited(session, duplicates):
    d = duplicates
    merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    listed, _ = roadmap.list_items(session, ANONYMOUS, roadmap.Filters())
    assert d["b"].id not in {i.id for i in listed} and d["a"].id in {i.id for i in listed}
    with pytest.raises(NotFound):
        roadmap.get_visible_item(session, ANONYMOUS, d["b"].public_id)
    actions = set(session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == d["b"].public_id)))
    assert "item.merged" in actions


def test_merge_refuses_itself_merged_items_and_cycles(session, duplicates):
    d = duplicates
    a, b, pm = d["a"], d["b"], d["pm"]
    c = make_item(session, title="Third copy")
    with pytest.raises(Conflict, match="into itself"):
        merging.merge_items(session, source=a, target=a, actor=pm)
    merging.merge_items(session, source=b, target=a, actor=pm)
    with pytest.raises(Conflict, match="itself merged"):
        merging.merge_items(session, source=c, target=b, actor=pm)  # into a merged item
    with pytest.raises(Conflict, match="already merged"):
        merging.merge_items(session, source=b, target=c, actor=pm)
    with pytest.raises(Conflict):
        merging.merge_items(session, source=a, target=b, actor=pm)  # A into B would make a cycle


# --- undo -------------------------------------------------------------------------------------------------


def test_undo_restores_b_exactly_and_leaves_new_activity_on_a(session, duplicates):
    d = duplicates
    a, b, pm = d["a"], d["b"], d["pm"]
    before = snapshot(session, a, b)
    merge = merging.merge_items(session, source=b, target=a, actor=pm)

    # Since the merge: Eve votes on A (which follows it) and comments there.
    eve = make_user(session, display_name="Eve")
    vote(session, a, eve, CRITICAL)
    eve_comment = comment(session, a, eve)

    result = merging.undo_merge(session, merge=merge, actor=pm)
    after = snapshot(session, a, b)

    assert result.votes_back == 3 and result.votes_kept == 0
    # B: its votes (Ann's dropped one re-created in full), comments with the pin, feedback, follows, count.
    # A: Ann's importance back to nice to have; Eve's vote, follow and comment stay.
    eve_vote = {row for row in after["votes"] if row.user_id == eve.id}
    assert [(row.item_id, row.importance) for row in eve_vote] == [(a.id, CRITICAL)]
    assert after["votes"] - eve_vote == before["votes"]
    assert after["comments"] - {(eve_comment.id, a.id, False)} == before["comments"]
    assert after["feedback"] == before["feedback"]
    assert {f for f in after["follows"] if f.user_id != eve.id} == before["follows"]
    assert (a.id, eve.id) in {(f.item_id, f.user_id) for f in after["follows"]}
    assert after["counts"][b.id] == before["counts"][b.id] == (3, 2)
    assert after["counts"][a.id] == (3, 3) and before["counts"][a.id] == (2, 2)
    assert after["merged_into"] == before["merged_into"] == {a.id: None, b.id: None}
    assert voting.reconcile(session, fix=False) == []
    assert merge.undone_at is not None and merge.undone_by_id == pm.id
    roadmap.get_visible_item(session, ANONYMOUS, b.public_id)  # B is back on the roadmap


def test_undo_keeps_what_people_changed_on_a_since_the_merge(session, duplicates):
    d = duplicates
    a, b, pm = d["a"], d["b"], d["pm"]
    merge = merging.merge_items(session, source=b, target=a, actor=pm)
    voting.withdraw_vote(session, item=a, user=d["cleo"])  # a moved vote, withdrawn on A
    vote(session, a, d["ann"], IMPORTANT)  # Ann changes the importance the merge raised

    result = merging.undo_merge(session, merge=merge, actor=pm)

    assert result.votes_kept == 1 and result.importances_kept == 1
    assert votes_of(session, b) == {d["ann"].id: CRITICAL, d["dan"].id: NICE}  # Cleo stays withdrawn
    assert votes_of(session, a) == {d["ann"].id: IMPORTANT, d["bob"].id: CRITICAL}  # Ann's choice stands
    assert voting.reconcile(session, fix=False) == []


def test_a_merge_is_undone_once(session, duplicates):
    d = duplicates
    merge = merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    merging.undo_merge(session, merge=merge, actor=d["pm"])
    with pytest.raises(Conflict, match="already been undone"):
        merging.undo_merge(session, merge=merge, actor=d["pm"])
    assert votes_of(session, d["b"]) == {d["ann"].id: CRITICAL, d["cleo"].id: IMPORTANT, d["dan"].id: NICE}


def test_undo_waits_for_a_later_merge_of_the_target(session, duplicates):
    d = duplicates
    first = merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    keeper = make_item(session, title="Shift marketplace")
    merging.merge_items(session, source=d["a"], target=keeper, actor=d["pm"])
    with pytest.raises(Conflict, match="Undo that merge first"):
        merging.undo_merge(session, merge=first, actor=d["pm"])
    # B's address leads through A to the item that now holds everything.
    assert merging.find_merge_target(session, ANONYMOUS, d["b"].public_id).id == keeper.id


# --- B's address ------------------------------------------------------------------------------------------


async def test_b_redirects_to_a_for_those_who_may_see_a(client, session, duplicates):
    d = duplicates
    merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    for path in (f"/items/{d['b'].public_id}", d["b"].path):
        response = await client.get(path)
        assert response.status_code == 301 and response.headers["location"] == d["a"].path
        assert response.headers["cache-control"] == "no-store"  # undo must be able to take it back
    api = await client.get(f"/api/v1/items/{d['b'].public_id}")
    assert api.status_code == 301 and api.headers["location"] == f"/api/v1/items/{d['a'].public_id}"
    landed = await client.get(d["b"].path, follow_redirects=True)
    assert landed.status_code == 200 and "Shift swaps" in landed.text


async def test_b_is_a_plain_404_for_those_who_may_not_see_a(client, session, duplicates):
    d = duplicates
    d["a"].visibility = Visibility.internal
    session.flush()
    merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    missing_page = await client.get(f"/items/zz99zz99/{d['b'].slug}")
    missing_api = await client.get("/api/v1/items/zz99zz99")
    page = await client.get(d["b"].path)
    api = await client.get(f"/api/v1/items/{d['b'].public_id}")
    assert page.status_code == missing_page.status_code == 404
    assert page.text.replace(d["b"].public_id, "zz99zz99") == missing_page.text
    assert api.status_code == 404 and api.json() == missing_api.json()
    # Staff may see internal items: for them B still leads to A.
    sign_in(client, session, d["pm"])
    assert (await client.get(d["b"].path)).headers["location"] == d["a"].path


def test_the_api_redirect_is_documented(app, session, duplicates):  # type: ignore[no-untyped-def]
    import schemathesis

    d = duplicates
    merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    operation = schemathesis.openapi.from_asgi("/openapi.json", app)["/api/v1/items/{id}"]["GET"]
    response = operation.Case(path_parameters={"id": d["b"].public_id}).call_and_validate(allow_redirects=False)
    assert response.status_code == 301


# --- the staff pages --------------------------------------------------------------------------------------


def _text(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).replace("&#34;", '"').split())


async def test_a_pm_merges_from_the_edit_page_and_undoes_it(client, session, duplicates):
    d = duplicates
    a, b = d["a"], d["b"]
    sign_in(client, session, d["pm"])
    edit = await client.get(f"/admin/items/{b.public_id}")
    assert f'href="/admin/items/{b.public_id}/merge"' in edit.text and "Merge into another item…" in edit.text

    found = await client.get(f"/admin/items/{b.public_id}/merge", params={"q": "shift"})
    assert f"/admin/items/{b.public_id}/merge?into={a.public_id}" in found.text
    assert f"merge?into={b.public_id}" not in found.text  # not into itself

    confirm = await client.get(f"/admin/items/{b.public_id}/merge", params={"into": a.public_id})
    words = _text(confirm.text)
    assert "3 votes, of which 1 from people who also voted" in words
    assert "1 comment" not in words and "3 comments" in words
    assert "1 piece of private feedback" in words and "3 followers" in words
    assert "goes from 2 to 4 votes" in words

    merged = await post_form(client, f"/admin/items/{b.public_id}/merge", {"into": a.public_id},
                             page=f"/admin/items/{b.public_id}/merge?into={a.public_id}")
    assert merged.status_code == 303 and merged.headers["location"] == f"/admin/items/{a.public_id}"
    assert counters(session, a)[0] == 4

    page = _text((await client.get(f"/admin/items/{b.public_id}")).text)
    today = utcnow().strftime("%-d %B %Y")
    assert f"Merged into Shift swaps on {today} by Petra PM" in page and "Undo merge" in page
    assert "Merge into another item…" not in page

    undone = await post_form(client, f"/admin/items/{b.public_id}/merge/undo", page=f"/admin/items/{b.public_id}")
    assert undone.status_code == 303
    assert counters(session, b)[0] == 3 and counters(session, a)[0] == 2
    again = _text((await client.get(f"/admin/items/{b.public_id}")).text)
    assert "Merge undone" in again and "Merge into another item…" in again


async def test_the_items_history_words_a_merge_as_the_audit_log_does(client, session, duplicates):
    d = duplicates
    a, b = d["a"], d["b"]
    sign_in(client, session, d["pm"])
    await post_form(client, f"/admin/items/{b.public_id}/merge", {"into": a.public_id},
                    page=f"/admin/items/{b.public_id}/merge?into={a.public_id}")

    history = _text((await client.get(f"/admin/items/{a.public_id}")).text)
    assert "Took in a merged item" in history
    assert "Merged from: “Swap shifts" in history and "Votes moved: 2" in history
    assert "(empty) →" not in history


async def test_merging_into_a_merged_item_is_refused_on_the_page(client, session, duplicates):
    d = duplicates
    c = make_item(session, title="Third copy")
    merging.merge_items(session, source=d["b"], target=d["a"], actor=d["pm"])
    sign_in(client, session, d["pm"])
    refused = await post_form(client, f"/admin/items/{c.public_id}/merge", {"into": d["b"].public_id},
                              page=f"/admin/items/{c.public_id}/merge")
    assert refused.status_code == 409 and "itself merged into another item" in refused.text
    assert session.scalar(select(func.count()).select_from(Merge)) == 1


async def test_customers_cannot_merge(client, session, duplicates):
    d = duplicates
    sign_in(client, session, make_user(session))
    response = await post_form(client, f"/admin/items/{d['b'].public_id}/merge", {"into": d["a"].public_id})
    assert response.status_code == 404
    assert counters(session, d["b"])[0] == 3


# --- comments keep their audience -------------------------------------------------------------------------


@pytest.fixture
def audiences(session):  # type: ignore[no-untyped-def]
    """Two segments, a customer in each, a PM; comments are written through the rules (by someone who may see
    the item). Returned: the people, and a function making an item with one comment saying `words`."""
    enterprise = Segment(slug="enterprise-merge", name="Enterprise")
    starter = Segment(slug="starter-merge", name="Starter")
    session.add_all([enterprise, starter])
    session.flush()
    big = Organisation(name="Big Logistics", segment_id=enterprise.id)
    small = Organisation(name="Small Bakery", segment_id=starter.id)
    session.add_all([big, small])
    session.flush()
    people = {
        "pm": make_pm(session, password=None, display_name="Petra PM"),
        "erin": make_user(session, password=None, organisation_id=big.id),  # Enterprise
        "sam": make_user(session, password=None, organisation_id=small.id),  # Starter
    }
    product = make_product(session)

    def item_with_comment(title: str, words: str, *, author: str, visibility=Visibility.public,  # type: ignore[no-untyped-def]
                          segments=(), published=True):
        item = make_item(session, product=product, title=title, visibility=visibility, published=published,
                         segments=[{"enterprise": enterprise, "starter": starter}[s] for s in segments])
        made = discussion.create_comment(session, viewer=viewer_of(people[author]), item=item, body=words)
        return item, made

    def viewer_of(user):  # type: ignore[no-untyped-def]
        organisation = session.get(Organisation, user.organisation_id) if user.organisation_id else None
        return Viewer(user=user, segment_id=organisation.segment_id if organisation else None)

    return people, item_with_comment


async def _sees(client, session, who, people, item, comment) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    """Whether `who` finds the comment's words on the item's page, in the API and at its permalink."""
    client.cookies.clear()
    if who != "visitor":
        sign_in(client, session, people[who])
    page = await client.get(item.path, follow_redirects=True)
    api = await client.get(f"/api/v1/items/{item.public_id}/comments", follow_redirects=True)
    permalink = await client.get(f"/comments/{comment.public_id}", follow_redirects=True)
    return {"page": page.status_code == 200 and comment.body in page.text,
            "api": api.status_code == 200 and comment.body in api.text,
            "permalink": permalink.status_code == 200 and comment.body in permalink.text}


NOWHERE = {"page": False, "api": False, "permalink": False}
EVERYWHERE = {"page": True, "api": True, "permalink": True}


@pytest.mark.parametrize(("b_audience", "a_audience", "asks"), [
    ({"visibility": Visibility.internal}, {}, True),
    ({"published": False}, {}, True),
    ({"visibility": Visibility.customers}, {}, True),
    ({"visibility": Visibility.customers, "segments": ["enterprise"]}, {"visibility": Visibility.customers}, True),
    ({"visibility": Visibility.customers, "segments": ["enterprise"]},
     {"visibility": Visibility.customers, "segments": ["enterprise", "starter"]}, True),
    ({"visibility": Visibility.customers, "segments": ["enterprise", "starter"]},
     {"visibility": Visibility.customers, "segments": ["enterprise"]}, False),
    ({"visibility": Visibility.customers}, {"visibility": Visibility.customers, "segments": ["starter"]}, False),
    ({}, {"visibility": Visibility.internal}, False),
    ({}, {}, False),
    ({"visibility": Visibility.internal}, {"published": False}, False),
])
def test_the_preview_counts_the_comments_a_merge_would_show_to_more_people(session, audiences, b_audience,
                                                                         a_audience, asks):
    people, item_with_comment = audiences
    b, _ = item_with_comment("Duplicate", "Said on B", author="pm", **b_audience)
    a, _ = item_with_comment("Keeper", "Said on A", author="pm", **a_audience)
    hidden = discussion.create_comment(session, viewer=Viewer(user=people["pm"]), item=b, body="Hidden on B")
    discussion.hide_comment(session, actor=people["pm"], comment=hidden)

    preview = merging.preview_merge(session, source=b, target=a)
    assert preview.comments == 2
    # Hidden comments are seen by staff only, wherever they are: they do not count as shown to more people.
    assert preview.comments_shown_wider == (1 if asks else 0)


class TestCommentsKeepTheirAudience:
    async def test_comments_for_a_segment_stay_with_it_when_merged_into_a_public_item(
            self, client, session, audiences):
        people, item_with_comment = audiences
        b, secret = item_with_comment("Enterprise rota export", "Our Zebrafjord depots need it by May",
                                      author="erin", visibility=Visibility.customers, segments=["enterprise"])
        a, _ = item_with_comment("Rota export", "We need this too", author="sam")
        before = {who: await _sees(client, session, who, people, b, secret) for who in ("visitor", "sam", "erin")}
        assert before == {"visitor": NOWHERE, "sam": NOWHERE, "erin": EVERYWHERE}

        sign_in(client, session, people["pm"])
        confirm = _text((await client.get(f"/admin/items/{b.public_id}/merge",
                                          params={"into": a.public_id})).text)
        assert ("1 comment on “Enterprise rota export” was written where fewer people could read it "
                "(customers in Enterprise) than can read “Rota export” (everyone)") in confirm
        merged = await post_form(client, f"/admin/items/{b.public_id}/merge", {"into": a.public_id},
                                 page=f"/admin/items/{b.public_id}/merge?into={a.public_id}")
        assert merged.status_code == 303
        flash = _text((await client.get(merged.headers["location"])).text)
        assert "1 comment stays with “Enterprise rota export”" in flash

        # Nobody can read it who could not before: not on A's page, not in the API, not at its permalink.
        for who in ("visitor", "sam"):
            assert await _sees(client, session, who, people, a, secret) == NOWHERE, who
        assert session.scalar(select(Comment.item_id).where(Comment.id == secret.id)) == b.id

        sign_in(client, session, people["pm"])
        undone = await post_form(client, f"/admin/items/{b.public_id}/merge/undo", page=f"/admin/items/{b.public_id}")
        assert undone.status_code == 303
        assert await _sees(client, session, "erin", people, b, secret) == EVERYWHERE
        for who in ("visitor", "sam"):
            assert await _sees(client, session, who, people, b, secret) == NOWHERE, who

    async def test_the_pm_may_choose_to_show_them_to_everyone(self, client, session, audiences):
        people, item_with_comment = audiences
        b, secret = item_with_comment("Enterprise rota export", "Fine to share: we need CSV", author="erin",
                                      visibility=Visibility.customers, segments=["enterprise"])
        a, _ = item_with_comment("Rota export", "We need this too", author="sam")
        sign_in(client, session, people["pm"])
        confirm = (await client.get(f"/admin/items/{b.public_id}/merge", params={"into": a.public_id})).text
        assert 'name="publish_comments" value="1"' in confirm
        assert "checked" not in confirm.split('name="publish_comments"')[1].split(">")[0]
        merged = await post_form(client, f"/admin/items/{b.public_id}/merge",
                                 {"into": a.public_id, "publish_comments": "1"},
                                 page=f"/admin/items/{b.public_id}/merge?into={a.public_id}")
        assert merged.status_code == 303
        assert await _sees(client, session, "visitor", people, a, secret) == EVERYWHERE

        sign_in(client, session, people["pm"])
        await post_form(client, f"/admin/items/{b.public_id}/merge/undo", page=f"/admin/items/{b.public_id}")
        assert (await _sees(client, session, "visitor", people, a, secret))["page"] is False
        assert await _sees(client, session, "visitor", people, b, secret) == NOWHERE
        assert await _sees(client, session, "erin", people, b, secret) == EVERYWHERE

    async def test_a_public_item_merged_into_a_segment_item_shows_neither_side_to_more_people(
            self, client, session, audiences):
        people, item_with_comment = audiences
        b, said_publicly = item_with_comment("Rota export", "Anyone may read this", author="sam")
        a, secret = item_with_comment("Enterprise rota export", "Our Zebrafjord depots need it by May",
                                      author="erin", visibility=Visibility.customers, segments=["enterprise"])
        sign_in(client, session, people["pm"])
        confirm = (await client.get(f"/admin/items/{b.public_id}/merge", params={"into": a.public_id})).text
        assert "publish_comments" not in confirm  # nothing to ask: A is read by fewer people, not more
        merged = await post_form(client, f"/admin/items/{b.public_id}/merge", {"into": a.public_id},
                                 page=f"/admin/items/{b.public_id}/merge?into={a.public_id}")
        assert merged.status_code == 303

        # A's comment does not reach B's audience through B's old address, the API or its permalink.
        for who in ("visitor", "sam"):
            assert await _sees(client, session, who, people, b, secret) == NOWHERE, who
            assert await _sees(client, session, who, people, a, secret) == NOWHERE, who
        # B's comment moved to A: read by fewer people now, never more.
        assert await _sees(client, session, "visitor", people, a, said_publicly) == NOWHERE
        assert await _sees(client, session, "erin", people, a, said_publicly) == EVERYWHERE

        sign_in(client, session, people["pm"])
        await post_form(client, f"/admin/items/{b.public_id}/merge/undo", page=f"/admin/items/{b.public_id}")
        assert await _sees(client, session, "visitor", people, b, said_publicly) == EVERYWHERE
        assert await _sees(client, session, "visitor", people, b, secret) == NOWHERE
        assert await _sees(client, session, "erin", people, a, secret) == EVERYWHERE
