"""Webhook names (any letter case) and a link's issue per initiative or item (GitHub/GitLab paths in any letter
case) are unique in the database, not only in the service: two requests at the same instant both pass the
service's look-up, and the second still gets the form's friendly message, not a server error."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError

from app.errors import FormInvalid
from app.tech import service as tech
from app.tech.models import BacklogLink, HookKind, Initiative, TrackerHook
from tests.factories import make_item, make_pm


@pytest.fixture
def pm(session):  # type: ignore[no-untyped-def]
    return make_pm(session, email="pat@example.com")


def test_the_database_refuses_a_second_hook_name_in_another_letter_case(session):
    session.add(TrackerHook(public_id="a", kind=HookKind.github, name="CI", salt="s"))
    session.flush()
    with pytest.raises(IntegrityError), session.begin_nested():
        session.add(TrackerHook(public_id="b", kind=HookKind.gitlab, name="ci", salt="s"))
        session.flush()


def test_the_database_refuses_the_same_issue_twice_on_an_initiative_or_an_item(session):
    initiative = Initiative(title="Exports", items=[])
    item = make_item(session)
    session.add(initiative)
    session.flush()
    for owner in ({"initiative_id": initiative.id}, {"item_id": item.id}):
        session.add(BacklogLink(kind="github", key="Acme/App#88", **owner))
        session.flush()
        with pytest.raises(IntegrityError), session.begin_nested():
            session.add(BacklogLink(kind="github", key="acme/app#88", **owner))
            session.flush()
    # The same issue on another initiative is fine, and so is another tracker's key.
    other = Initiative(title="Imports", items=[])
    session.add(other)
    session.flush()
    session.add_all([BacklogLink(kind="github", key="acme/app#88", initiative_id=other.id),
                     BacklogLink(kind="jira", key="PAY-1", initiative_id=initiative.id)])
    session.flush()


def test_a_racing_second_hook_gets_the_form_message(session, pm, monkeypatch):
    tech.create_hook(session, data=tech.HookForm(name="GitHub acme/app", kind=HookKind.github), actor=pm)
    monkeypatch.setattr(tech, "_hook_named", lambda session, name: False)  # as if both looked at once
    with pytest.raises(FormInvalid) as refused:
        tech.create_hook(session, data=tech.HookForm(name="github ACME/app", kind=HookKind.gitlab), actor=pm)
    assert refused.value.errors["name"].startswith("A webhook named “github ACME/app” exists already")
    assert session.query(TrackerHook).count() == 1  # and the session is still usable


def test_a_racing_second_link_gets_the_form_message(session, pm, monkeypatch):
    item = make_item(session)
    tech.add_link(session, data=tech.LinkForm(url="https://github.com/Acme/App/issues/88"), actor=pm, item=item)
    monkeypatch.setattr(tech, "_linked_already", lambda *a, **k: False)
    with pytest.raises(FormInvalid) as refused:
        tech.add_link(session, data=tech.LinkForm(url="https://github.com/acme/app/issues/88"), actor=pm, item=item)
    assert refused.value.errors == {"url": "acme/app#88 is linked here already."}
    assert session.query(BacklogLink).count() == 1
