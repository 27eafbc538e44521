"""A long discussion comes a page of threads at a time: oldest first, replies with their thread, the pinned
answer on top of every page, and every way back to a comment (posting, replying, permalinks) on its page."""

from __future__ import annotations

import re
from urllib.parse import urljoin

from sqlalchemy import event, select

from app.accounts.viewer import ANONYMOUS, Viewer
from app.discussion import service as discussion
from app.discussion.models import Comment
from tests.discussion.helpers import comment, comment_ids, many_comments, post_comment, section
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in


def nav_links(html: str, base: str) -> dict[str, str]:
    """The discussion's page links, resolved against the page's address: {"prev"|"next": url}."""
    nav = re.search(r'<nav class="pagination" aria-label="Comment pages">(.*?)</nav>', html, re.DOTALL)
    links = re.findall(r'href="([^"]+)" rel="(\w+)"', nav.group(1)) if nav else []
    return {rel: urljoin(base, href.replace("&amp;", "&")) for href, rel in links}


def thread_of(html: str, public_id: str) -> str:
    """The thread that the comment starts, up to the next thread."""
    start = html.rindex("<article", 0, html.index(f'id="comment-{public_id}"'))
    end = html.find('<li class="comment-thread">', start)
    return html[start:end if end != -1 else len(html)]


class TestPages:
    async def test_120_comments_come_50_at_a_time_with_links_that_land_on_the_discussion(self, client, session):
        item = make_item(session)
        rows = many_comments(session, item, make_user(session), 120)
        ids = [c.public_id for c in rows]

        first = await client.get(item.path)
        shown = section(first.text)
        assert comment_ids(shown) == ids[:50]
        assert "Comments <span class=\"muted\">(120)" in shown and "Page 1 of 3" in shown
        assert nav_links(shown, item.path) == {"next": f"{item.path}?page=2#comments"}
        assert "Newer comments →" in shown

        second_url = nav_links(shown, item.path)["next"]
        second = section((await client.get(second_url)).text)
        assert comment_ids(second) == ids[50:100] and "Page 2 of 3" in second
        # The first page's link is its one address (no ?page=1: answered as it, but not from the kept pages)
        assert nav_links(second, second_url) == {"prev": f"{item.path}#comments",
                                                 "next": f"{item.path}?page=3#comments"}
        third = section((await client.get(f"{item.path}?page=3")).text)
        assert comment_ids(third) == ids[100:]
        assert nav_links(third, item.path) == {"prev": f"{item.path}?page=2#comments"}
        assert "← Older comments" in third

    async def test_a_short_discussion_has_no_page_links(self, client, session):
        item = make_item(session)
        many_comments(session, item, make_user(session), 50)
        shown = section((await client.get(item.path)).text)
        assert len(comment_ids(shown)) == 50 and nav_links(shown, item.path) == {} and "Page 1 of" not in shown

    async def test_replies_stay_under_their_thread_whatever_page_it_is_on(self, client, session):
        item, ann = make_item(session), make_user(session)
        rows = many_comments(session, item, make_user(session), 120)
        parent = rows[74]  # on page 2
        replies = [comment(session, item, ann, f"Reply {n}", parent=parent) for n in (1, 2)]

        second = section((await client.get(f"{item.path}?page=2")).text)
        thread = thread_of(second, parent.public_id)
        assert comment_ids(thread) == [parent.public_id] + [r.public_id for r in replies]
        assert "Comments <span class=\"muted\">(122)" in second
        # The replies are the newest comments, yet neither the last page nor the first shows them.
        for page in (1, 3):
            other = section((await client.get(f"{item.path}?page={page}")).text)
            assert not {r.public_id for r in replies} & set(comment_ids(other))
        assert len(comment_ids(section((await client.get(f"{item.path}?page=3")).text))) == 20

    async def test_the_pinned_answer_leads_every_page_and_is_not_paged_again(self, client, session):
        item, pm = make_item(session), make_pm(session)
        rows = many_comments(session, item, make_user(session), 120)
        answer = comment(session, item, pm, "The official answer")
        discussion.pin_comment(session, actor=pm, comment=answer)
        answer.created_at = rows[59].created_at  # in the middle of page 2's threads
        session.flush()

        seen: list[str] = []
        for page in (1, 2, 3):
            shown = section((await client.get(f"{item.path}?page={page}")).text)
            found = comment_ids(shown)
            assert found[0] == answer.public_id and found.count(answer.public_id) == 1
            assert shown.count(">Pinned</span>") == 1
            seen += found[1:]
        assert seen == [c.public_id for c in rows]  # 50, 50, 20: the pin takes no thread's place

    async def test_customers_never_see_hidden_comments_on_any_page_staff_do(self, client, session):
        item, pm = make_item(session), make_pm(session)
        rows = many_comments(session, item, make_user(session), 120)
        hidden = rows[10:20]
        kept_reply = comment(session, item, make_user(session), "Reply in a hidden thread", parent=rows[15])
        for c in hidden:
            discussion.hide_comment(session, actor=pm, comment=c)
        visible = [c.public_id for c in rows if c not in hidden]

        sign_in(client, session, make_user(session))
        pages = [section((await client.get(f"{item.path}?page={page}")).text) for page in (1, 2, 3)]
        assert [len(comment_ids(p)) for p in pages] == [50, 50, 10]  # 110 threads
        assert [i for p in pages for i in comment_ids(p)] == visible
        assert "Comments <span class=\"muted\">(110)" in pages[2] and "Page 3 of 3" in pages[2]
        assert not any("Reply in a hidden thread" in p or kept_reply.public_id in p for p in pages)

        client.cookies.clear()
        sign_in(client, session, pm)
        staff = section((await client.get(item.path)).text)
        assert comment_ids(staff)[10] == hidden[0].public_id and staff.count(">Hidden</span>") == 10
        assert "Comments <span class=\"muted\">(121)" in staff and "Page 1 of 3" in staff

    async def test_a_page_past_the_end_shows_the_last_one_and_nonsense_the_first(self, client, session):
        item = make_item(session)
        rows = many_comments(session, item, make_user(session), 60)
        past = await client.get(f"{item.path}?page=9")
        assert past.status_code == 302 and past.headers["location"] == f"{item.path}?page=2"  # one address per page
        assert comment_ids(section((await client.get(past.headers["location"])).text)) == [
            c.public_id for c in rows[50:]]
        without_slug = await client.get(f"/items/{item.public_id}?page=2&utm_source=mail")
        assert without_slug.status_code == 301 and without_slug.headers["location"] == f"{item.path}?page=2"
        for nonsense in ("0", "-1", "two", "99999999999"):
            shown = section((await client.get(f"{item.path}?page={nonsense}", follow_redirects=True)).text)
            assert comment_ids(shown)[0] == rows[0].public_id


class TestLandingOnTheComment:
    async def test_a_new_comment_lands_on_the_last_page_and_a_reply_on_its_threads_page(self, client, session):
        item, ann = make_item(session), make_user(session)
        rows = many_comments(session, item, make_user(session), 120)
        sign_in(client, session, ann)

        posted = await post_comment(client, item, "Late to the party")
        new = session.scalar(select(Comment).where(Comment.body == "Late to the party"))
        assert posted.headers["location"] == f"{item.path}?page=3#comment-{new.public_id}"
        landed = await client.get(posted.headers["location"])
        assert "Your comment is posted." in landed.text and new.public_id in comment_ids(section(landed.text))

        replied = await post_comment(client, item, "Answering an old one", parent=rows[60].public_id)
        reply = session.scalar(select(Comment).where(Comment.body == "Answering an old one"))
        assert replied.headers["location"] == f"{item.path}?page=2#comment-{reply.public_id}"

        # Editing and deleting come back to the same page.
        edited = await post_form(client, f"/comments/{reply.public_id}/edit", {"body": "Answering, edited"},
                                 page=item.path)
        assert edited.headers["location"] == f"{item.path}?page=2#comment-{reply.public_id}"
        deleted = await post_form(client, f"/comments/{new.public_id}/delete", {}, page=item.path)
        assert deleted.headers["location"] == f"{item.path}?page=3#comments"

    async def test_a_refused_reply_comes_back_on_its_threads_page_with_the_text(self, client, session):
        item = make_item(session)
        rows = many_comments(session, item, make_user(session), 120)
        sign_in(client, session, make_user(session))
        refused = await post_comment(client, item, "z" * 5001, parent=rows[110].public_id)
        assert refused.status_code == 422
        shown = section(refused.text)
        assert "Page 3 of 3" in shown and rows[110].public_id in comment_ids(shown)
        assert re.search(r'<details class="comment-reply" open>', shown) and "z" * 5001 in shown

    async def test_a_permalink_leads_to_the_page_and_keeps_hidden_comments_hidden(self, client, session):
        item, pm = make_item(session), make_pm(session)
        rows = many_comments(session, item, make_user(session), 120)
        reply = comment(session, item, make_user(session), "A reply", parent=rows[99])

        for target, page in ((rows[0], ""), (rows[99], "?page=2"), (reply, "?page=2"), (rows[100], "?page=3")):
            found = await client.get(f"/comments/{target.public_id}")
            assert found.status_code == 303 and found.headers["location"] == f"{item.path}{page}#comment-{target.public_id}"

        discussion.hide_comment(session, actor=pm, comment=rows[5])
        # Without Comment 6, customers find Comment 51 on page 1; staff, who see both, on page 2.
        assert (await client.get(f"/comments/{rows[5].public_id}")).status_code == 404
        assert (await client.get(f"/comments/{rows[50].public_id}")).headers["location"] == \
            f"{item.path}#comment-{rows[50].public_id}"
        sign_in(client, session, pm)
        assert (await client.get(f"/comments/{rows[5].public_id}")).headers["location"] == \
            f"{item.path}#comment-{rows[5].public_id}"
        assert (await client.get(f"/comments/{rows[50].public_id}")).headers["location"] == \
            f"{item.path}?page=2#comment-{rows[50].public_id}"

    async def test_edit_and_report_pages_lead_back_through_the_permalink(self, client, session):
        item, ann = make_item(session), make_user(session)
        mine = comment(session, item, ann, "Mine")
        other = comment(session, item, make_user(session), "Theirs")
        sign_in(client, session, ann)
        assert f'href="/comments/{mine.public_id}">Cancel' in (await client.get(f"/comments/{mine.public_id}/edit")).text
        assert f'href="/comments/{other.public_id}">Cancel' in \
            (await client.get(f"/comments/{other.public_id}/report")).text


def test_a_page_takes_the_same_few_queries_however_long_the_discussion(session):
    item, pm, ann = make_item(session), make_pm(session), make_user(session)
    rows = many_comments(session, item, make_user(session), 301)  # seven pages, one thread on the last
    for parent in rows[::3]:
        comment(session, item, ann, "A reply", parent=parent)
    discussion.pin_comment(session, actor=pm, comment=comment(session, item, pm, "Answer"))

    statements: list[str] = []

    def count(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    engine = session.get_bind().engine
    event.listen(engine, "before_cursor_execute", count)
    try:
        for viewer in (ANONYMOUS, Viewer(user=ann), Viewer(user=pm)):  # the counts, then the page
            for page in (1, 4, 7):
                statements.clear()
                shown = discussion.list_comments(session, viewer=viewer, item=item, page=page)
                assert len(statements) == 2, statements
                assert len(shown.paged) == (50 if page < 7 else 1) and shown.pinned is not None
    finally:
        event.remove(engine, "before_cursor_execute", count)
