"""The pages an email's links open, and the email choices on /me and the Move form: at 1280 and 390 px, light
and dark, axe-core finds no WCAG 2.1 A/AA violation and nothing scrolls sideways; the buttons of the unsubscribe page
and of a changelog subscription's confirmation work in a browser with nobody signed in (the confirmation's form was
sent with `Origin: null` while its page's policy sent no referrer, and refused)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest

from app.accounts import service as accounts
from app.accounts.models import Role
from app.config import Settings
from app.db import utcnow
from app.notify import changelog as subscriptions
from app.notify import service as notify
from app.voting import service as voting
from tests.factories import make_item, make_product
from tests.helpers.browser import Portal, axe_violations

pytestmark = pytest.mark.browser

WIDTHS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
SECRET = "browser-journey-secret-" + "k" * 32  # the live server's (tests/helpers/servers.py)


def _path(url: str) -> str:
    return urlsplit(url).path


def test_email_links_and_choices_are_accessible_and_fit_a_phone(portal: Portal, open_context: Any) -> None:
    settings = Settings(database_url="sqlite://", secret_key=SECRET, base_url=portal.url,
                        _env_file=None)  # type: ignore[call-arg]
    with portal.transaction() as session:
        product = make_product(session)
        item = make_item(session, product=product, title="Shift swaps from your phone")
        customer = accounts.create_user(session, email="maya@example.com", role=Role.customer, display_name="Maya")
        pm = accounts.create_user(session, email="pm@example.com", role=Role.pm, display_name="Pat")
        voting.follow(session, item=item, user=customer)
        tokens = {"customer": accounts.start_session(session, user=customer),
                  "pm": accounts.start_session(session, user=pm)}
        unsubscribe = _path(notify.unsubscribe_url(settings, user_id=customer.id, scope=f"i-{item.public_id}"))
        preferences = _path(notify.preferences_url(settings, user_id=customer.id))
        editor = f"/admin/items/{item.public_id}"

    problems: list[str] = []
    for width, viewport in WIDTHS.items():
        for scheme in ("light", "dark"):
            for who, paths in (("nobody", [unsubscribe, preferences]), ("customer", ["/me"]), ("pm", [editor, item.path])):
                context = open_context(viewport=viewport, color_scheme=scheme)
                if who in tokens:
                    context.add_cookies([{"name": "ahead_session", "value": tokens[who], "url": portal.url}])
                page = context.new_page()
                for path in paths:
                    response = page.goto(path)
                    where = f"{who}, {width}, {scheme}, {path.split('/')[1]}"
                    if response is None or response.status >= 400:
                        problems.append(f"{where}: answered {response.status if response else 'nothing'}")
                        continue
                    scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                    if scroll > inner:
                        problems.append(f"{where}: scrolls sideways ({scroll} px in a {inner} px window)")
                    problems += [f"{where}: {line}" for line in axe_violations(page)]
                context.close()
    assert problems == [], "\n".join(problems)

    # Nobody signed in: the button on the confirmation page unsubscribes.
    context = open_context(viewport=WIDTHS["phone"])
    page = context.new_page()
    page.goto(unsubscribe)
    page.get_by_role("button", name="Unsubscribe").click()
    page.get_by_text("You will get no more emails about “Shift swaps from your phone”.").wait_for()
    with portal.transaction() as session:
        assert not voting.is_following(session, item=item, user=customer)

    # Nobody signed in: the changelog subscription's confirmation, opened from its email in a fresh browser.
    confirm = f"/changelog-subscription/{subscriptions.confirm_token(SECRET, email='reader@example.com', asked_at=utcnow())}"
    context = open_context(viewport=WIDTHS["laptop"])
    page = context.new_page()
    page.goto(confirm)
    page.get_by_role("button", name="Confirm").click()
    page.get_by_role("heading", name="You are subscribed").wait_for()
    with portal.transaction() as session:
        assert subscriptions.is_subscribed(session, email="reader@example.com")

    assert portal.server_errors() == ""
