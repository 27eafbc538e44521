"""The changelog (list, a product's, an entry), its staff pages, the item editor's release notes and the
webhook pages (with a delivery log), at 1280 and 390 px, light and dark: axe-core finds no WCAG 2.1 A/AA
violation and nothing scrolls sideways."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from app import seed
from app.accounts import service as accounts
from app.changelog import service as changelog
from app.changelog.models import changelog_entry_items
from app.db import utcnow
from app.roadmap.models import Item, Product, Stage
from app.webhooks import service as webhooks
from app.webhooks.models import WebhookDelivery
from tests.helpers.browser import Portal, axe_violations, screenshot

pytestmark = pytest.mark.browser

WIDTHS = {"laptop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def test_changelog_and_webhook_pages_are_accessible_light_and_dark(portal: Portal, open_context: Any) -> None:
    with portal.transaction() as session:
        seed.seed_demo(session)
        admin = accounts.get_user_by_email(session, seed.ADMIN_EMAIL)
        assert admin is not None
        token = accounts.start_session(session, user=admin)
        shipped = list(session.scalars(select(Item).join(Stage, Stage.id == Item.stage_id)
                                       .where(Stage.is_released.is_(True),  # the demo's entries announce some
                                              Item.id.not_in(select(changelog_entry_items.c.item_id)))
                                       .order_by(Item.released_at.desc()).limit(2)))
        planned = session.scalar(select(Item).join(Stage, Stage.id == Item.stage_id)
                                 .where(Stage.is_released.is_(False), Stage.is_closed.is_(False),
                                        Item.published_at.is_not(None)).limit(1))
        assert len(shipped) == 2 and planned is not None
        entry = changelog.create_entry(session, actor=admin, data=changelog.EntryInput(
            title="Spring release: two things you asked for, with a rather long title to wrap on a phone",
            notes="Both are **live** for every customer. See the [guide](https://example.com/guide).",
            product=None, items=shipped, published_at=utcnow()))
        endpoint = webhooks.create_endpoint(session, actor=admin, data=webhooks.EndpointCreate(
            url="https://hooks.crm-of-a-customer-with-a-long-name.example.com/incoming/ahead/roadmap-events?token=x",
            description="CRM sync", events=("item.released", "changelog.published")))
        for attempt, status, error in ((1, 500, "the receiver answered 500"), (2, 200, "")):
            session.add(WebhookDelivery(endpoint_id=endpoint.id, message_id="msg_0123456789abcdef0123456789abcdef",
                                        event_type="changelog.published", payload={"type": "changelog.published",
                                                                                   "data": {"entry": entry.title}},
                                        attempt=attempt, url=endpoint.url, status_code=status, duration_ms=42,
                                        error=error, response_body='{"ok": false, "why": "' + "x" * 120 + '"}'))
        product = session.get(Product, shipped[0].product_id)
        assert product is not None
        product_slug = product.slug
        paths_public = ["/changelog", f"/changelog?product={product_slug}", entry.path, "/changelog/subscribe"]
        paths_staff = ["/admin/changelog", "/admin/changelog/new", f"/admin/changelog/{entry.public_id}",
                       f"/admin/items/{planned.public_id}", "/admin/webhooks", "/admin/webhooks/new",
                       f"/admin/webhooks/{endpoint.id}"]

    problems: list[str] = []
    for scheme in ("light", "dark"):
        for width, viewport in WIDTHS.items():
            context = open_context(viewport=viewport, color_scheme=scheme)
            context.add_cookies([{"name": "ahead_session", "value": token, "url": portal.url}])
            page = context.new_page()
            for path in paths_public + paths_staff:
                response = page.goto(path)
                where = f"{scheme}, {width}, {path}"
                if response is None or response.status >= 400:
                    problems.append(f"{where}: answered {response.status if response else 'nothing'}")
                    continue
                scroll, inner = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
                if scroll > inner:
                    problems.append(f"{where}: scrolls sideways ({scroll} px wide in a {inner} px window)")
                problems += [f"{where}: {line}" for line in axe_violations(page)]
            if width == "phone":
                page.goto(f"/admin/webhooks/{endpoint.id}")
                screenshot(page, f"webhook-log-phone-{scheme}")
                page.goto(entry.path)
                screenshot(page, f"changelog-entry-phone-{scheme}")
    assert not problems, "\n".join(problems)
    assert not portal.server_errors()
