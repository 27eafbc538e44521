"""The discussion rules, through the service the pages and (later) the API share."""

from __future__ import annotations

import sys
import threading
from datetime import timedelta

import pytest
from sqlalchemy import select

from app.accounts.viewer import ANONYMOUS, Viewer
from app.audit.models import AuditEvent
from app.discussion import service as discussion
from app.discussion.models import Comment
from app.errors import Conflict, Forbidden, FormInvalid, NotFound
from app.roadmap.models import Item, Visibility
from app.voting import service as voting
from tests.discussion.helpers import comment
from tests.factories import make_item, make_pm, make_user
from tests.helpers.databases import connected, own_database


def threads(session, item, viewer):  # type: ignore[no-untyped-def]
    """[(top body, [reply bodies])] as the viewer sees them."""
    found = discussion.list_comments(session, viewer=viewer, item=item).threads
    return [(t.body if not t.is_deleted else "(deleted)", [r.body for r in t.replies]) for t in found]


def test_a_reply_to_a_reply_joins_the_top_comments_thread(session):
    item, ann, bob = make_item(session), make_user(session), make_user(session)
    top = comment(session, item, ann, "Will this support SAML?")
    reply = comment(session, item, bob, "We need it too", parent=top)
    deeper = comment(session, item, ann, "Same here", parent=reply)
    assert reply.parent_id == top.id and deeper.parent_id == top.id
    assert threads(session, item, ANONYMOUS) == [("Will this support SAML?", ["We need it too", "Same here"])]


def test_a_reply_must_be_on_the_same_item(session):
    first, second, ann = make_item(session), make_item(session), make_user(session)
    top = comment(session, first, ann)
    with pytest.raises(NotFound):
        comment(session, second, ann, parent=top)


def test_commenting_follows_the_item(session):
    item, ann = make_item(session), make_user(session)
    comment(session, item, ann)
    assert voting.is_following(session, item=item, user=ann)


@pytest.mark.parametrize("body", ["", "   \n\t ", "x" * (discussion.MAX_BODY + 1)])
def test_empty_or_too_long_text_is_refused_with_a_message(session, body):
    item, ann = make_item(session), make_user(session)
    with pytest.raises(FormInvalid) as refused:
        comment(session, item, ann, body)
    assert refused.value.errors["body"]


def test_windows_line_endings_count_once(session):
    item, ann = make_item(session), make_user(session)
    text = ("a" * 99 + "\r\n") * 50  # 5,000 characters as a browser counts them, 5,050 bytes on the wire
    assert len(comment(session, item, ann, text).body) == 4999  # the last line break is trimmed


def test_the_author_edits_within_15_minutes_and_not_after(session):
    item, ann, bob = make_item(session), make_user(session), make_user(session)
    c = comment(session, item, ann, "First thought")
    discussion.edit_comment(session, viewer=Viewer(user=ann), comment=c, body="Second thought")
    assert c.body == "Second thought" and c.edited_at is not None
    with pytest.raises(Forbidden):
        discussion.edit_comment(session, viewer=Viewer(user=bob), comment=c, body="Not yours")
    c.created_at -= timedelta(minutes=discussion.EDIT_MINUTES, seconds=1)
    session.flush()
    with pytest.raises(Forbidden, match="15 minutes"):
        discussion.edit_comment(session, viewer=Viewer(user=ann), comment=c, body="Too late")
    assert c.body == "Second thought"


def test_deleting_erases_the_text_and_keeps_a_placeholder_only_when_there_are_replies(session):
    item, ann, bob = make_item(session), make_user(session), make_user(session)
    lonely = comment(session, item, ann, "Nobody answered this")
    answered = comment(session, item, ann, "Somebody answered this")
    comment(session, item, bob, "An answer", parent=answered)
    for c in (lonely, answered):
        discussion.delete_comment(session, viewer=Viewer(user=ann), comment=c)
    assert lonely.body == "" and answered.body == ""
    assert threads(session, item, ANONYMOUS) == [("(deleted)", ["An answer"])]
    with pytest.raises(Forbidden):
        discussion.delete_comment(session, viewer=Viewer(user=ann),
                                  comment=session.scalar(select(Comment).where(Comment.body == "An answer")))


def test_staff_comments_are_official_and_one_official_answer_is_pinned(session):
    item, ann, pm = make_item(session), make_user(session), make_pm(session)
    customer = comment(session, item, ann, "Question")
    first = comment(session, item, pm, "Official answer one")
    second = comment(session, item, pm, "Official answer two")
    assert first.is_official and not customer.is_official
    with pytest.raises(Conflict):
        discussion.pin_comment(session, actor=pm, comment=customer)
    discussion.pin_comment(session, actor=pm, comment=first)
    discussion.pin_comment(session, actor=pm, comment=second)
    session.refresh(first)
    assert not first.is_pinned and second.is_pinned
    shown = discussion.list_comments(session, viewer=ANONYMOUS, item=item).threads
    assert [t.body for t in shown] == ["Official answer two", "Question", "Official answer one"]
    assert [t.is_pinned for t in shown] == [True, False, False]
    actions = session.scalars(select(AuditEvent.action).where(AuditEvent.entity_id == second.public_id)).all()
    assert actions == ["comment.pinned"]


def test_hidden_comments_and_their_replies_vanish_for_everyone_but_staff(session):
    item, ann, bob, pm = make_item(session), make_user(session), make_user(session), make_pm(session)
    top = comment(session, item, ann, "Rude remark")
    comment(session, item, bob, "A reply to it", parent=top)
    comment(session, item, bob, "A fine comment")
    discussion.hide_comment(session, actor=pm, comment=top)
    assert threads(session, item, Viewer(user=bob)) == [("A fine comment", [])]
    assert threads(session, item, ANONYMOUS) == [("A fine comment", [])]
    staff_view = discussion.list_comments(session, viewer=Viewer(user=pm), item=item).threads
    assert [(t.body, t.is_hidden) for t in staff_view] == [("Rude remark", True), ("A fine comment", False)]
    with pytest.raises(NotFound):  # not even its author may act on it now
        discussion.get_comment(session, viewer=Viewer(user=ann), public_id=top.public_id)
    discussion.restore_comment(session, actor=pm, comment=top)
    assert threads(session, item, ANONYMOUS)[0] == ("Rude remark", ["A reply to it"])


def test_comments_of_an_item_the_viewer_may_not_see_are_not_found(session):
    secret = make_item(session, visibility=Visibility.internal)
    pm, ann = make_pm(session), make_user(session)
    c = comment(session, secret, pm, "Internal note")
    for viewer in (ANONYMOUS, Viewer(user=ann)):
        with pytest.raises(NotFound):
            discussion.get_comment(session, viewer=viewer, public_id=c.public_id)
    assert discussion.get_comment(session, viewer=Viewer(user=pm), public_id=c.public_id).comment is c


def test_a_report_counts_once_per_person_and_dismissing_closes_it(session):
    item, ann, bob, cat, pm = (make_item(session), make_user(session), make_user(session), make_user(session),
                               make_pm(session))
    c = comment(session, item, ann, "Buy cheap watches")
    assert discussion.report_comment(session, viewer=Viewer(user=bob), comment=c, reason="Spam")
    assert not discussion.report_comment(session, viewer=Viewer(user=bob), comment=c, reason="Spam again")
    assert discussion.report_comment(session, viewer=Viewer(user=cat), comment=c)
    with pytest.raises(Forbidden):
        discussion.report_comment(session, viewer=Viewer(user=ann), comment=c)  # one's own
    with pytest.raises(Forbidden):
        discussion.report_comment(session, viewer=Viewer(user=pm), comment=c)  # staff hide instead
    with pytest.raises(FormInvalid):
        discussion.report_comment(session, viewer=Viewer(user=make_user(session)), comment=c, reason="x" * 501)
    [open_report] = discussion.list_open_reports(session)
    assert [(r.reporter_name, r.reason) for r in open_report.reports] == [(bob.name, "Spam"), (cat.name, "")]
    assert discussion.dismiss_reports(session, actor=pm, comment=c) == 2
    assert discussion.list_open_reports(session) == [] and discussion.count_open_reports(session) == 0


def test_a_deleted_account_is_shown_as_deleted_user(session):
    from app.accounts import service as accounts

    item, ann = make_item(session), make_user(session, display_name="Ann Example")
    comment(session, item, ann, "Still useful")
    accounts.delete_account(session, user=ann, confirm_email=ann.email)
    [shown] = discussion.list_comments(session, viewer=ANONYMOUS, item=item).threads
    assert (shown.author_name, shown.body) == ("Deleted user", "Still useful")


def test_an_author_without_a_name_is_not_shown_by_their_email(session):
    item = make_item(session)
    comment(session, item, make_user(session, email="jane.doe@acme.example", display_name=""), "Hi")
    comment(session, item, make_pm(session, email="pat@vendor.example", display_name=""), "Hello")
    shown = discussion.list_comments(session, viewer=ANONYMOUS, item=item).threads
    assert [t.author_name for t in shown] == ["Customer", "Product team"]


def test_many_threads_reading_a_discussion_for_the_first_time_at_once_all_get_it(tmp_path):
    """The item page renders off the event loop, in a pool of threads, and the discussion's aliases fill in their
    columns as they are first used: once shared by all threads, two doing that at once for the first time could
    each build its own column, and one page among many first ones failed with a 500 (NoSuchColumnError
    'author.id', seen in tests/voting/test_concurrency.py). Each thread now has aliases of its own."""
    with own_database(tmp_path, "aliases") as url, connected(url) as database:
        with database.transaction() as session:
            item, ann = make_item(session), make_user(session, display_name="Ann")
            comment(session, item, ann, "Will this support SAML?")
            item_id = item.id
        readers = 4  # within the smallest pool (PostgreSQL: 5 per instance)
        start = threading.Barrier(readers)
        seen: list[tuple[int, list[str]]] = []
        failed: list[BaseException] = []

        def read() -> None:
            with database.new_session(write=False) as session:
                item = session.get(Item, item_id)
                start.wait(timeout=30)
                try:
                    found = discussion.list_comments(session, viewer=ANONYMOUS, item=item)
                    seen.append((id(discussion._ALIASES.author), [t.author_name for t in found.threads]))
                except BaseException as error:
                    failed.append(error)

        interval = sys.getswitchinterval()
        sys.setswitchinterval(1e-5)  # threads switch often, as on a busy server
        try:
            workers = [threading.Thread(target=read) for _ in range(readers)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join()
        finally:
            sys.setswitchinterval(interval)
    assert failed == []
    assert [names for _, names in seen] == [["Ann"]] * readers
    assert len({alias for alias, _ in seen}) == readers  # no thread's aliases are another's
