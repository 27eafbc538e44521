"""Votes count exactly once; the counter on the item always equals the rows."""

from datetime import timedelta
from typing import get_args

from sqlalchemy import func, select, update

from app.accounts.viewer import Viewer
from app.api.schemas import ImportanceKey as ApiImportanceKey
from app.db import utcnow
from app.voting import service as voting
from app.voting.models import Follow, Importance, ImportanceKey, Vote
from tests.factories import make_item, make_pm, make_user


def _rows(session, item):
    return session.scalar(select(func.count()).select_from(Vote).where(Vote.item_id == item.id))


def test_vote_change_importance_withdraw_and_revote(session):
    item, user = make_item(session), make_user(session)
    assert voting.cast_vote(session, item=item, user=user, importance=Importance.important).created
    again = voting.cast_vote(session, item=item, user=user, importance=Importance.critical)
    assert not again.created and again.importance is Importance.critical
    session.refresh(item)
    assert item.vote_count == 1 == _rows(session, item)
    assert voting.votes_of(session, user=user, item_ids=[item.id]) == {item.id: Importance.critical}
    assert voting.withdraw_vote(session, item=item, user=user)
    assert not voting.withdraw_vote(session, item=item, user=user)
    session.refresh(item)
    assert item.vote_count == 0 == _rows(session, item)
    voting.cast_vote(session, item=item, user=user, importance=Importance.nice_to_have)
    session.refresh(item)
    assert item.vote_count == 1 == _rows(session, item)


def test_voting_follows_the_item(session):
    item, user = make_item(session), make_user(session)
    voting.cast_vote(session, item=item, user=user, importance=Importance.important)
    assert voting.is_following(session, item=item, user=user)
    voting.unfollow(session, item=item, user=user)
    assert not voting.is_following(session, item=item, user=user)
    # The row stays as the opt-out (she voted: without it she would still be told of changes).
    assert session.scalar(select(func.count()).select_from(Follow).where(Follow.stopped_at.is_(None))) == 0


def test_captured_vote_keeps_the_higher_importance(session):
    item, customer, pm = make_item(session), make_user(session), make_pm(session)
    voting.cast_vote(session, item=item, user=customer, importance=Importance.critical)
    result = voting.cast_vote(session, item=item, user=customer, importance=Importance.nice_to_have,
                              captured_by=pm, keep_higher=True)
    assert result.importance is Importance.critical
    session.refresh(item)
    assert item.vote_count == 1


def test_reconcile_finds_and_fixes_a_drifted_counter(session):
    item, user = make_item(session), make_user(session)
    voting.cast_vote(session, item=item, user=user, importance=Importance.important)
    item.vote_count = 7
    session.flush()
    drifts = voting.reconcile(session)
    assert [(d.public_id, d.stored, d.actual) for d in drifts] == [(item.public_id, 7, 1)]
    session.refresh(item)
    assert item.vote_count == 1 and item.trend_count == 1
    assert voting.reconcile(session) == []


def test_the_counters_and_the_trend_follow_each_vote_and_withdrawal(session):
    item, old_voter, new_voter = make_item(session), make_user(session), make_user(session)
    voting.cast_vote(session, item=item, user=old_voter, importance=Importance.important)
    session.execute(update(Vote).where(Vote.user_id == old_voter.id)
                    .values(created_at=utcnow() - timedelta(days=voting.TREND_DAYS + 1)))
    voting.refresh_trends(session)
    session.refresh(item)
    assert (item.vote_count, item.trend_count) == (1, 0)

    result = voting.cast_vote(session, item=item, user=new_voter, importance=Importance.critical)
    assert (result.created, result.count, item.vote_count, item.trend_count) == (True, 2, 2, 1)
    changed = voting.cast_vote(session, item=item, user=new_voter, importance=Importance.important)
    assert (changed.created, changed.count) == (False, 2)  # the counter comes back with a changed importance too

    assert voting.get_item_to_vote(session, Viewer(user=old_voter), item.public_id) is item  # with its stage
    gone = voting.unvote(session, viewer=Viewer(user=old_voter), item=item)  # outside the trend window
    assert (gone.removed, gone.count, item.vote_count, item.trend_count) == (True, 1, 1, 1)
    gone = voting.unvote(session, viewer=Viewer(user=new_voter), item=item)  # a recent one
    assert (gone.removed, gone.count, item.vote_count, item.trend_count) == (True, 0, 0, 0)
    assert voting.unvote(session, viewer=Viewer(user=new_voter), item=item) == voting.Withdrawal(removed=False)
    session.refresh(item)
    assert (item.vote_count, item.trend_count) == (0, 0) and _rows(session, item) == 0
    assert voting.reconcile(session, fix=False) == []


def test_the_importance_keys_the_api_promises_are_the_importances_names():
    # Importance.key is typed as these three literals (so the API's schemas accept it without a check);
    # a fourth importance, or a renamed one, must change them too.
    names = tuple(importance.name for importance in Importance)
    assert get_args(ImportanceKey) == names == get_args(ApiImportanceKey)
    assert [importance.key for importance in Importance] == list(names)
