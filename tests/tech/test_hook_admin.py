"""Making a tracker webhook: the answer that shows its secret is never stored by a cache, and reloading it (the
browser re-submits the form) does not make a second webhook."""

from __future__ import annotations

import pytest

from app.tech.models import TrackerHook
from tests.factories import make_pm
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, email="pia@example.com")
    sign_in(client, session, user)
    return user


async def test_the_secret_page_is_no_store_and_a_reload_makes_no_second_webhook(client, session, pm):
    made = await post_form(client, "/admin/tech/hooks", {"name": "GitHub acme/app", "kind": "github"},
                           page="/admin/tech/hooks")
    assert made.status_code == 200 and made.headers["cache-control"] == "no-store"
    assert "GitHub acme/app" in made.text
    again = await post_form(client, "/admin/tech/hooks", {"name": "github ACME/app", "kind": "gitlab"},
                            page="/admin/tech/hooks")
    assert again.status_code == 422 and again.headers["cache-control"] == "no-store"
    assert "A webhook named “github ACME/app” exists already" in again.text
    assert 'value="github ACME/app"' in again.text  # what was typed stays
    assert session.query(TrackerHook).count() == 1
    listed = await client.get("/admin/tech/hooks")
    assert listed.headers["cache-control"] == "no-store"
    other = await post_form(client, "/admin/tech/hooks", {"name": "Jira payments", "kind": "jira"},
                            page="/admin/tech/hooks")
    assert other.status_code == 200 and session.query(TrackerHook).count() == 2


async def test_the_updates_column_names_pull_and_merge_requests(client, session, pm):
    for name, kind in (("GitHub acme/app", "github"), ("GitLab platform", "gitlab"), ("Jira payments", "jira")):
        made = await post_form(client, "/admin/tech/hooks", {"name": name, "kind": kind}, page="/admin/tech/hooks")
        assert made.status_code == 200
    page = (await client.get("/admin/tech/hooks")).text
    assert "GitHub issues and pull requests only" in page and "GitLab issues and merge requests only" in page
    assert "Jira issues only" in page and "GitHub issues only" not in page
