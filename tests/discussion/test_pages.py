"""The item page's discussion, as people use it: plain forms, 303s back to #comment-<id>, 422s that keep the text."""

from __future__ import annotations

import re
from datetime import timedelta
from urllib.parse import quote

from sqlalchemy import select

from app.discussion.models import Comment
from app.errors import wait_words
from app.organisations.models import Organisation
from app.roadmap.models import Visibility
from tests.discussion.helpers import comment, comment_ids, post_comment, press_staff_button, section
from tests.factories import make_item, make_pm, make_user
from tests.helpers.csrf import unmasked_tokens
from tests.helpers.http import post_form, sign_in


async def test_a_customer_comments_and_replies_and_lands_on_the_comment(client, session):
    item, ann = make_item(session), make_user(session, display_name="Ann Example")
    sign_in(client, session, ann)
    posted = await post_comment(client, item, "We need **SAML** for this.")
    assert posted.status_code == 303
    top = session.scalar(select(Comment).where(Comment.item_id == item.id))
    assert posted.headers["location"] == f"{item.path}#comment-{top.public_id}"
    replied = await post_comment(client, item, "And SCIM, please.", parent=top.public_id)
    reply = session.scalar(select(Comment).where(Comment.parent_id == top.id))
    assert replied.headers["location"].endswith(f"#comment-{reply.public_id}")
    deeper = await post_comment(client, item, "Agreed.", parent=reply.public_id)
    assert deeper.status_code == 303
    page = await client.get(item.path)
    assert "Your reply is posted." in page.text
    shown = section(page.text)
    assert "Ann Example" in shown and "<strong>SAML</strong>" in shown and "Comments <span class=\"muted\">(3)" in shown
    # One level deep: both replies sit in the top comment's reply list.
    replies = shown[shown.index('class="comment-replies"'):]
    assert comment_ids(replies)[:2] == [reply.public_id, session.scalar(
        select(Comment.public_id).where(Comment.body == "Agreed."))]


async def test_signed_out_visitors_read_comments_and_get_a_sign_in_link_back_to_the_item(client, session):
    item, ann = make_item(session), make_user(session)
    comment(session, item, ann, "Visible to all")
    page = await client.get(item.path)
    shown = section(page.text)
    assert "Visible to all" in shown and "<textarea" not in shown
    assert f'href="/login?next={quote(item.path + "#comments", safe="/")}">Sign in to comment</a>' in shown
    refused = await post_comment(client, item, "Sneaky")
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login?next=")
    assert session.scalar(select(Comment).where(Comment.body == "Sneaky")) is None


async def test_empty_or_too_long_text_re_renders_the_item_page_with_the_text_kept(client, session):
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    long_text = "Please add exports. " * 300  # 6,000 characters
    refused = await post_comment(client, item, long_text)
    assert refused.status_code == 422
    assert item.title in refused.text  # the item page itself, not an error page
    assert "at most 5,000 characters" in refused.text and "this one has 5,999" in refused.text
    assert long_text.strip() in refused.text
    assert 'aria-invalid="true"' in refused.text
    empty = await post_comment(client, item, "   ")
    assert empty.status_code == 422 and "Write something before posting" in empty.text
    assert session.scalar(select(Comment).where(Comment.item_id == item.id)) is None


async def test_no_comment_box_cuts_a_long_paste_silently(client, session):
    """maxlength would cut a 10,000-character paste to 5,000 without a word; the limit is counted instead."""
    item, ann = make_item(session), make_user(session)
    comment(session, item, make_user(session), "Top")
    sign_in(client, session, ann)
    page = (await client.get(item.path)).text
    boxes = re.findall(r"<textarea[^>]*>", section(page))
    assert len(boxes) == 2  # the new comment and the reply
    for box in boxes:
        assert "maxlength" not in box and 'data-max-chars="5000"' in box
    assert "Up to 5,000 characters" in page


async def test_a_refused_reply_reopens_its_own_form_with_the_text(client, session):
    item, ann = make_item(session), make_user(session)
    top = comment(session, item, make_user(session), "Top")
    sign_in(client, session, ann)
    refused = await post_comment(client, item, "y" * 5001, parent=top.public_id)
    assert refused.status_code == 422
    assert re.search(r'<details class="comment-reply" open>\s*<summary>Reply', refused.text)
    reply_form = refused.text[refused.text.index(f'id="reply-{top.public_id}"'):]
    assert reply_form.split(">", 1)[1].startswith("y" * 5001)
    top_form = refused.text[refused.text.index('id="comment-body"'):]
    assert top_form.split(">", 1)[1].startswith("</textarea>")  # the new-comment form stays empty


async def test_comments_on_an_item_the_viewer_may_not_see_answer_like_a_missing_item(client, session):
    organisation = Organisation(name="Acme")
    session.add(organisation)
    session.flush()
    outsider, pm = make_user(session), make_pm(session)
    customer = make_user(session, organisation_id=organisation.id)
    for_customers = make_item(session, visibility=Visibility.customers)
    internal = make_item(session, visibility=Visibility.internal)
    staff_note = comment(session, internal, pm, "Internal remark")
    sign_in(client, session, outsider)
    missing = await post_form(client, "/items/nosuch99/comments", {"body": "Hello"}, page="/")
    for item in (for_customers, internal):
        hidden = await post_comment(client, item, "Hello")
        assert hidden.status_code == 404 and unmasked_tokens(hidden.text) == unmasked_tokens(missing.text)
    for path in (f"/comments/{staff_note.public_id}/edit", f"/comments/{staff_note.public_id}/report"):
        assert (await client.get(path)).status_code == 404
    assert (await post_form(client, f"/comments/{staff_note.public_id}/report", {"reason": "x"})).status_code == 404
    assert (await post_form(client, f"/admin/moderation/{staff_note.public_id}/hide", {})).status_code == 404
    sign_in(client, session, customer)
    assert (await post_comment(client, for_customers, "Customers only, fine")).status_code == 303


async def test_the_author_edits_within_15_minutes_and_the_comment_says_edited(client, session):
    item, ann = make_item(session), make_user(session)
    c = comment(session, item, ann, "Frist!")
    sign_in(client, session, ann)
    form = await client.get(f"/comments/{c.public_id}/edit")
    assert form.status_code == 200 and "Frist!" in form.text
    empty = await post_form(client, f"/comments/{c.public_id}/edit", {"body": ""}, page=item.path)
    assert empty.status_code == 422 and "Write something" in empty.text
    saved = await post_form(client, f"/comments/{c.public_id}/edit", {"body": "First!"}, page=item.path)
    assert saved.status_code == 303 and saved.headers["location"].endswith(f"#comment-{c.public_id}")
    shown = section((await client.get(item.path)).text)
    assert "First!" in shown and "(edited)" in shown and "Frist!" not in shown

    c.created_at -= timedelta(minutes=16)
    session.flush()
    too_late = await post_form(client, f"/comments/{c.public_id}/edit", {"body": "Changed again"}, page=item.path)
    assert too_late.status_code == 403 and "15 minutes" in too_late.text
    assert (await client.get(f"/comments/{c.public_id}/edit")).status_code == 403
    shown = section((await client.get(item.path)).text)
    assert "First!" in shown and f"/comments/{c.public_id}/edit" not in shown


async def test_someone_else_cannot_edit_or_delete_a_comment(client, session):
    item, ann, bob = make_item(session), make_user(session), make_user(session)
    c = comment(session, item, ann, "Mine")
    sign_in(client, session, bob)
    assert f"/comments/{c.public_id}/edit" not in section((await client.get(item.path)).text)
    assert (await post_form(client, f"/comments/{c.public_id}/edit", {"body": "Hijacked"})).status_code == 403
    assert (await post_form(client, f"/comments/{c.public_id}/delete", {})).status_code == 403
    session.refresh(c)
    assert c.body == "Mine" and c.deleted_at is None


async def test_deleting_a_comment_with_replies_leaves_a_placeholder_and_one_without_disappears(client, session):
    item, ann, bob = make_item(session), make_user(session), make_user(session)
    answered = comment(session, item, ann, "Answered question")
    comment(session, item, bob, "The answer", parent=answered)
    lonely = comment(session, item, ann, "Lonely question")
    sign_in(client, session, ann)
    for c in (answered, lonely):
        done = await post_form(client, f"/comments/{c.public_id}/delete", {}, page=item.path)
        assert done.status_code == 303 and done.headers["location"] == f"{item.path}#comments"
    shown = section((await client.get(item.path)).text)
    assert "This comment was deleted" in shown and "The answer" in shown
    assert "Answered question" not in shown and "Lonely question" not in shown
    assert lonely.public_id not in shown and answered.public_id in shown


async def test_staff_answer_officially_and_pin_one_answer_to_the_top(client, session):
    item, ann, pm = make_item(session), make_user(session), make_pm(session, display_name="Pat PM")
    comment(session, item, ann, "Customer question")
    sign_in(client, session, pm)
    page = await client.get(item.path)
    assert "your comments are marked Official" in page.text
    await post_comment(client, item, "First official answer")
    await post_comment(client, item, "Second official answer")
    first, second = session.scalars(select(Comment).where(Comment.author_id == pm.id).order_by(Comment.id)).all()
    assert first.is_official and second.is_official
    for c in (first, second):
        pinned = await press_staff_button(client, item.path, c, "pin")
        assert pinned.status_code == 303 and pinned.headers["location"] == f"{item.path}#comment-{c.public_id}"

    client.cookies.clear()
    shown = section((await client.get(item.path)).text)
    assert comment_ids(shown)[0] == second.public_id
    assert shown.count(">Pinned</span>") == 1 and shown.count(">Official</span>") == 2
    # Customers cannot pin.
    sign_in(client, session, ann)
    assert (await post_form(client, f"/admin/moderation/{first.public_id}/pin", {}, page=item.path)).status_code == 404
    session.refresh(first)
    assert not first.is_pinned


async def test_staff_hide_and_restore_a_comment(client, session):
    item, ann, bob, pm = make_item(session), make_user(session), make_user(session), make_pm(session)
    rude = comment(session, item, ann, "Something rude")
    sign_in(client, session, pm)
    hidden = await press_staff_button(client, item.path, rude, "hide")
    assert hidden.status_code == 303 and hidden.headers["location"] == f"{item.path}#comment-{rude.public_id}"
    staff_view = section((await client.get(item.path)).text)
    assert "Something rude" in staff_view and ">Hidden</span>" in staff_view and ">Restore<" in staff_view

    sign_in(client, session, bob)
    assert "Something rude" not in (await client.get(item.path)).text
    client.cookies.clear()
    assert "Something rude" not in (await client.get(item.path)).text

    sign_in(client, session, pm)
    restored = await press_staff_button(client, item.path, rude, "restore")
    assert restored.status_code == 303 and restored.headers["location"] == f"{item.path}#comment-{rude.public_id}"
    client.cookies.clear()
    assert "Something rude" in (await client.get(item.path)).text


async def test_a_customer_reports_once_and_staff_dismiss_it_on_the_moderation_page(client, session):
    item, ann, bob, pm = make_item(session, title="Dark mode"), make_user(session), make_user(session), make_pm(session)
    spam = comment(session, item, ann, "Buy cheap watches")
    sign_in(client, session, bob)
    form = await client.get(f"/comments/{spam.public_id}/report")
    assert form.status_code == 200 and "Buy cheap watches" in form.text
    sent = await post_form(client, f"/comments/{spam.public_id}/report", {"reason": "Spam, obviously"}, page=item.path)
    assert sent.status_code == 303 and sent.headers["location"].endswith(f"#comment-{spam.public_id}")
    again = await post_form(client, f"/comments/{spam.public_id}/report", {"reason": "Still spam"}, page=item.path)
    assert again.status_code == 303
    page = await client.get(item.path)
    assert "You have already reported this comment" in page.text and "You reported this" in page.text
    sign_in(client, session, make_user(session))
    too_long = await post_form(client, f"/comments/{spam.public_id}/report", {"reason": "z" * 600}, page=item.path)
    assert too_long.status_code == 422 and "at most 500 characters" in too_long.text and "z" * 600 in too_long.text

    sign_in(client, session, pm)
    moderation = await client.get("/admin/moderation")
    assert moderation.status_code == 200
    assert "Buy cheap watches" in moderation.text and "Spam, obviously" in moderation.text
    assert "Still spam" not in moderation.text  # counted once
    assert f'href="/comments/{spam.public_id}"' in moderation.text  # the permalink: the page that shows it
    assert (await client.get(f"/comments/{spam.public_id}")).headers["location"] == f"{item.path}#comment-{spam.public_id}"
    assert ">Reported</span>" in section((await client.get(item.path)).text)
    dismissed = await post_form(client, f"/admin/moderation/{spam.public_id}/dismiss", {}, page="/admin/moderation")
    assert dismissed.status_code == 303 and dismissed.headers["location"] == "/admin/moderation"
    after = await client.get("/admin/moderation")
    assert "Reports dismissed" in after.text and "No open reports" in after.text
    client.cookies.clear()
    assert "Buy cheap watches" in (await client.get(item.path)).text  # dismissing leaves the comment


async def test_hiding_from_the_moderation_page_closes_the_report_and_restore_is_offered(client, session):
    item, ann, bob, pm = make_item(session), make_user(session), make_user(session), make_pm(session)
    rude = comment(session, item, ann, "Rude words")
    sign_in(client, session, bob)
    await post_form(client, f"/comments/{rude.public_id}/report", {}, page=item.path)
    sign_in(client, session, pm)
    done = await post_form(client, f"/admin/moderation/{rude.public_id}/hide", {}, page="/admin/moderation")
    assert done.status_code == 303
    page = (await client.get("/admin/moderation")).text
    assert "No open reports" in page
    hidden_section = page[page.index('id="hidden-title"'):]
    assert "Rude words" in hidden_section and f"/admin/moderation/{rude.public_id}/restore" in hidden_section
    await post_form(client, f"/admin/moderation/{rude.public_id}/restore", {}, page="/admin/moderation")
    assert "No hidden comments" in (await client.get("/admin/moderation")).text
    # Customers get the staff area's 404.
    sign_in(client, session, bob)
    assert (await client.get("/admin/moderation")).status_code == 404


async def test_comments_are_rate_limited_per_user_with_a_readable_429(client, session, app):
    app.state.settings.comment_rate_limit = "2/day"
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    assert (await post_comment(client, item, "one")).status_code == 303
    assert (await post_comment(client, item, "two")).status_code == 303
    limited = await post_comment(client, item, "Three, typed with care")
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
    assert "Your comment was not posted" in limited.text
    # the wait the page names is the one Retry-After gives (2/day: hours, where "a minute" was always said)
    assert f"Please wait {wait_words(int(limited.headers['retry-after']))} and" in limited.text
    assert ">Three, typed with care</textarea>" in limited.text  # nothing typed is lost
    assert session.scalar(select(Comment).where(Comment.body == "Three, typed with care")) is None
    first = session.scalar(select(Comment).where(Comment.body == "one"))
    assert first is not None
    reply = await post_comment(client, item, "A reply, kept too", parent=first.public_id)
    assert reply.status_code == 429 and "Your reply was not posted" in reply.text
    assert ">A reply, kept too</textarea>" in reply.text


async def test_a_comment_refused_for_what_it_says_spends_no_budget(client, session, app):
    """An empty comment is refused for what it is (422) and counts for nothing: the budget is for comments posted."""
    app.state.settings.comment_rate_limit = "2/day"
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    assert [(await post_comment(client, item, body)).status_code for body in ("", "  ", "one", "two", "three")] == [
        422, 422, 303, 303, 429]


async def test_comments_are_rate_limited_per_address_across_people(client, session, app):
    app.state.settings.comment_ip_rate_limit = "3/day"
    item = make_item(session)
    statuses = []
    for _ in range(2):
        sign_in(client, session, make_user(session))
        statuses += [(await post_comment(client, item, "hello")).status_code for _ in range(2)]
    assert statuses == [303, 303, 303, 429]


async def test_a_deleted_account_s_comments_show_deleted_user(client, session):
    from app.accounts import service as accounts

    item, ann = make_item(session), make_user(session, display_name="Ann Example")
    comment(session, item, ann, "Kept for the thread")
    accounts.delete_account(session, user=ann, confirm_email=ann.email)
    shown = section((await client.get(item.path)).text)
    assert "Deleted user" in shown and "Ann Example" not in shown and "Kept for the thread" in shown


async def test_posting_needs_the_csrf_token(client, session):
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    await client.get(item.path)
    forged = await client.post(f"/items/{item.public_id}/comments", data={"body": "Forged"})
    assert forged.status_code == 403
    assert session.scalar(select(Comment).where(Comment.body == "Forged")) is None
