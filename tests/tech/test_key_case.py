"""GitHub owners and repositories, and GitLab group/project paths, are case-insensitive: a link pasted with
capitals is matched by a delivery written in lower case (and the other way round), and keeps its display."""

from __future__ import annotations

import pytest

from app.errors import FormInvalid
from app.tech import service as tech
from app.tech.models import HookKind
from tests.factories import make_item, make_pm
from tests.helpers.trackers import github_headers, payload

pytestmark = pytest.mark.usefixtures("settings")


async def test_a_link_pasted_with_capitals_is_matched_by_a_lower_case_delivery(client, session, settings):
    pm = make_pm(session, email="pat@example.com")
    item = make_item(session)
    github = tech.add_link(session, data=tech.LinkForm(url="https://github.com/Acme/App/issues/88"), actor=pm, item=item)
    gitlab = tech.add_link(session, data=tech.LinkForm(url="https://gitlab.com/ACME/Platform/-/issues/12"),
                           actor=pm, item=item)
    assert (github.key, gitlab.key) == ("Acme/App#88", "ACME/Platform#12")
    with pytest.raises(FormInvalid) as twice:
        tech.add_link(session, data=tech.LinkForm(url="https://github.com/acme/app/issues/88"), actor=pm, item=item)
    assert twice.value.errors == {"url": "acme/app#88 is linked here already."}
    session.commit()

    hook = tech.create_hook(session, data=tech.HookForm(name="GitHub", kind=HookKind.github), actor=pm)
    secret = tech.hook_secret(settings.secret_key, hook)
    body = payload("github_issue_closed.json")  # repository acme/app
    answer = await client.post(f"/hooks/github/{hook.public_id}", content=body, headers=github_headers(secret, body))
    assert answer.status_code == 200 and answer.json()["outcome"] == "matched", answer.text

    lab = tech.create_hook(session, data=tech.HookForm(name="GitLab", kind=HookKind.gitlab), actor=pm)
    session.commit()
    answer = await client.post(f"/hooks/gitlab/{lab.public_id}", content=payload("gitlab_issue_closed.json"),
                               headers={"content-type": "application/json", "x-gitlab-event": "Issue Hook",
                                        "x-gitlab-token": tech.hook_secret(settings.secret_key, lab)})
    assert answer.status_code == 200 and answer.json()["outcome"] == "matched", answer.text  # acme/platform#12
    session.refresh(github)
    session.refresh(gitlab)
    assert github.done and gitlab.done
    assert (github.key, gitlab.key) == ("Acme/App#88", "ACME/Platform#12")  # shown as pasted


async def test_the_import_knows_a_link_in_another_case_is_the_same(client, session):
    from tests.helpers.http import post_form, sign_in

    pm = make_pm(session, email="pia@example.com")
    sign_in(client, session, pm)
    text = ("url,initiative\nhttps://github.com/Acme/App/issues/88,Payments\n"
            "https://github.com/acme/app/issues/88,Payments\n")
    response = await post_form(client, "/admin/tech/import", {"csv": text, "action": "preview"},
                               page="/admin/tech/import")
    assert "Line 3: acme/app#88 is listed twice for “Payments”." in response.text
