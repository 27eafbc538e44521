"""Two transactions recounting the same (item, organisation) pair at once, on PostgreSQL (SQLite has one writer).

A colleague's vote inserts the pair (item, organisation) in `desk_item_orgs`; a person moving into that
organisation, whose vote is on the same item, recounts that pair in a second transaction before the first commits.
Recounting it from a snapshot without the vote, the move's insert would collide with the vote's uncommitted pair.
What orders the two: both triggers update the item's window rows first (row locks), and the pair's recount takes
the organisation's advisory lock and inserts with ON CONFLICT DO UPDATE (aggregates.lock_organisations,
pairs_from_votes). The move must wait, succeed, and count both people.
"""

from __future__ import annotations

import threading
import time
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import select, update

from app.accounts.models import User
from app.desk import aggregates
from app.desk.models import DeskItemOrg
from app.organisations.models import Organisation
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance
from tests.factories import make_item, make_user
from tests.helpers.databases import connected, own_database, server_url

pytestmark = pytest.mark.skipif(server_url() is None, reason="concurrent writers need PostgreSQL")


def test_a_person_moving_into_an_organisation_while_a_colleague_votes_on_the_same_item(tmp_path: Path) -> None:
    with own_database(tmp_path, "desk_race") as url, connected(url) as database:
        with database.transaction() as session:
            acme = Organisation(name="Acme", revenue=Decimal(50_000))
            session.add(acme)
            session.flush()
            alice = make_user(session, email="alice@example.com", password=None, organisation_id=acme.id)
            bob = make_user(session, email="bob@example.com", password=None)
            item = make_item(session)
            voting.cast_vote(session, item=item, user=bob, importance=Importance.critical)
            ids = {"acme": acme.id, "alice": alice.id, "bob": bob.id, "item": item.id}

        voter = database.new_session(write=True)
        voting.cast_vote(voter, item=voter.get_one(Item, ids["item"]), user=voter.get_one(User, ids["alice"]),
                         importance=Importance.important)
        voter.flush()  # the pair (item, Acme) is in, not committed

        failures: list[BaseException] = []

        def move_bob() -> None:
            mover = database.new_session(write=True)
            try:
                mover.execute(update(User).where(User.id == ids["bob"]).values(organisation_id=ids["acme"]))
                mover.commit()
            except BaseException as error:  # reported by the test below
                failures.append(error)
                mover.rollback()
            finally:
                mover.close()

        thread = threading.Thread(target=move_bob)
        thread.start()
        time.sleep(1.0)  # the move is waiting for the vote's transaction
        voter.commit()
        voter.close()
        thread.join(30)

        assert not thread.is_alive()
        assert failures == []
        with database.transaction() as session:
            assert aggregates.recount(session) == []
            pair = session.scalars(select(DeskItemOrg).where(DeskItemOrg.item_id == ids["item"],
                                                             DeskItemOrg.organisation_id == ids["acme"])).one()
            assert pair.voters == 2  # Alice's vote and Bob's, who now counts for Acme
