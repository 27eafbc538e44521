"""Who is told: the recipients of an item's event, the signed links, the digest's schedule."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.db import utcnow
from app.discussion.models import Comment
from app.notify import service as notify
from app.notify.models import Delivery, EventKind
from app.roadmap.models import Item, Visibility, item_segments
from app.roadmap.visibility import visible_items
from app.voting import service as voting
from app.voting.models import CaptureSource, Importance
from tests.factories import make_item, make_pm, make_user
from tests.feedback.helpers import make_organisation, make_segment

SECRET = "test-secret-key-" + "x" * 32


def _ids(session: Session, kind: EventKind, item: Item, actor: User | None) -> set[int]:
    event = notify.Event(kind=kind, key="k", item_id=item.id, actor_id=actor.id if actor else None)
    return {row.id for row in session.execute(notify.recipients(event, item))}


def _comment(session: Session, item: Item, author: User) -> Comment:
    comment = Comment(public_id=f"c{author.id}x{item.id}", item_id=item.id, author_id=author.id, body="Hello")
    session.add(comment)
    session.flush()
    return comment


class TestRecipients:
    def test_followers_voters_commenters_and_captured_votes_minus_opt_outs_the_actor_and_closed_accounts(self, session):
        item = make_item(session)
        pm = make_pm(session)
        voter, commenter, follower, contact, stopped, disabled, deleted = (make_user(session) for _ in range(7))
        voting.cast_vote(session, item=item, user=voter, importance=Importance.important)
        _comment(session, item, commenter)  # a comment without the follow row the service would add
        voting.follow(session, item=item, user=follower)
        voting.cast_vote(session, item=item, user=contact, importance=Importance.critical, captured_by=pm,
                         source=CaptureSource.call)
        voting.cast_vote(session, item=item, user=stopped, importance=Importance.important)
        voting.unfollow(session, item=item, user=stopped)
        voting.cast_vote(session, item=item, user=stopped, importance=Importance.critical)  # voting again: still out
        for gone in (disabled, deleted):
            voting.cast_vote(session, item=item, user=gone, importance=Importance.important)
        disabled.is_active = False
        deleted.deleted_at = utcnow()
        voting.cast_vote(session, item=item, user=pm, importance=Importance.important)  # the actor
        session.flush()

        assert _ids(session, EventKind.stage, item, pm) == {voter.id, commenter.id, follower.id, contact.id}
        assert notify.count_recipients(session, notify.Event(kind=EventKind.stage, key="", item_id=item.id,
                                                             actor_id=pm.id), item) == 4

    def test_a_follow_again_ends_the_opt_out(self, session):
        item = make_item(session)
        person = make_user(session)
        voting.cast_vote(session, item=item, user=person, importance=Importance.important)
        voting.unfollow(session, item=item, user=person)
        assert not voting.is_following(session, item=item, user=person)
        assert _ids(session, EventKind.stage, item, None) == set()
        voting.follow(session, item=item, user=person)
        assert voting.is_following(session, item=item, user=person)
        assert _ids(session, EventKind.stage, item, None) == {person.id}

    def test_never_is_never_and_weekly_still_counts(self, session):
        item = make_item(session)
        weekly, never = make_user(session), make_user(session)
        for person in (weekly, never):
            voting.follow(session, item=item, user=person)
        notify.set_preferences(session, user=weekly, choices={EventKind.released: Delivery.weekly})
        notify.set_preferences(session, user=never, choices={EventKind.released: Delivery.never})
        assert _ids(session, EventKind.released, item, None) == {weekly.id}
        assert _ids(session, EventKind.stage, item, None) == {weekly.id, never.id}

    def test_only_people_who_may_see_the_item(self, session):
        enterprise, starter = make_segment(session, "Enterprise"), make_segment(session, "Starter")
        big, small = make_organisation(session, "Big", segment=enterprise), make_organisation(session, "Small",
                                                                                              segment=starter)
        insider, outsider, nobody = (make_user(session, organisation_id=big.id),
                                     make_user(session, organisation_id=small.id), make_user(session))
        pm = make_pm(session)
        item = make_item(session, visibility=Visibility.customers)
        session.execute(item_segments.insert().values(item_id=item.id, segment_id=enterprise.id))
        for person in (insider, outsider, nobody, pm):
            voting.follow(session, item=item, user=person)
        assert _ids(session, EventKind.stage, item, None) == {insider.id, pm.id}
        # The same rule as visible_items, person by person.
        for person in (insider, outsider, nobody, pm):
            session.refresh(person, ["organisation"])
            seen = session.scalar(visible_items(Viewer.of(person)).where(Item.id == item.id)) is not None
            assert seen == (person.id in {insider.id, pm.id})
        item.published_at = None
        session.flush()
        assert _ids(session, EventKind.stage, item, None) == {pm.id}


class TestSignedLinks:
    def test_a_token_names_its_person_and_scope_and_nothing_else(self):
        token = notify.sign(SECRET, purpose=notify.UNSUBSCRIBE, user_id=7, scope="i-abc")
        assert notify.verify(SECRET, purpose=notify.UNSUBSCRIBE, token=token) == notify.Signed(7, "i-abc")
        user, scope, mac = token.split(".")
        assert notify.verify(SECRET, purpose=notify.UNSUBSCRIBE, token=f"8.{scope}.{mac}") is None
        assert notify.verify(SECRET, purpose=notify.UNSUBSCRIBE, token=f"{user}.i-abd.{mac}") is None
        assert notify.verify(SECRET, purpose=notify.PREFERENCES, token=token) is None
        assert notify.verify("another-secret-" + "y" * 32, purpose=notify.UNSUBSCRIBE, token=token) is None
        assert notify.verify(SECRET, purpose=notify.UNSUBSCRIBE, token=token[:-1] + ("A" if token[-1] != "A" else "B")) is None
        for junk in ("", "..", "a.b.c", "7.i-abc", "٧.i-abc." + mac, "7.i-abc.é"):
            assert notify.verify(SECRET, purpose=notify.UNSUBSCRIBE, token=junk) is None


class TestDigestSchedule:
    def test_the_next_moment_is_in_the_portal_time_zone(self):
        schedule = notify.DigestSchedule(weekday=0, hour=9, timezone="Europe/Berlin")
        # Wednesday 3 December 2026, 08:00 UTC: next Monday 7 December, 09:00 in Berlin (CET, UTC+1).
        assert schedule.next_after(datetime(2026, 12, 3, 8, tzinfo=UTC)) == datetime(2026, 12, 7, 8, tzinfo=UTC)
        # Summer time: Monday 29 June 2026, 09:00 CEST is 07:00 UTC.
        assert schedule.next_after(datetime(2026, 6, 25, 12, tzinfo=UTC)) == datetime(2026, 6, 29, 7, tzinfo=UTC)
        # At the very moment: the following week.
        assert schedule.next_after(datetime(2026, 12, 7, 8, tzinfo=UTC)) == datetime(2026, 12, 14, 8, tzinfo=UTC)

    @pytest.mark.parametrize("hour", [0, 23])
    def test_any_hour_of_any_day(self, hour):
        schedule = notify.DigestSchedule(weekday=6, hour=hour, timezone="America/New_York")
        due = schedule.next_after(datetime(2026, 12, 3, 8, tzinfo=UTC))
        local = due.astimezone(schedule.zone())
        assert (local.weekday(), local.hour) == (6, hour)
