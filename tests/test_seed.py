"""The demo company a new user sees after `make run` (each test seeds inside its own transaction)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import seed
from app.accounts import passwords
from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.accounts.viewer import ANONYMOUS
from app.audit import service as audit
from app.desk.models import Decision
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Visibility
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def seeded(session: Session) -> str:
    assert seed.is_empty(session)
    summary = seed.seed_demo(session)
    assert not seed.is_empty(session)
    return summary


def _items(session: Session) -> list[Item]:
    return list(session.scalars(select(Item).order_by(Item.id)))


async def test_board_shows_both_products_every_stage_and_every_timeframe(client, session, seeded):
    assert [p.name for p in roadmap.list_products(session)] == ["Rotawise Web", "Rotawise Mobile"]
    columns = roadmap.get_board(session, ANONYMOUS, roadmap.Filters())
    assert [c.stage.name for c in columns] == ["Under consideration", "Planned", "In progress", "Released"]
    assert all(c.total >= 3 for c in columns), [(c.stage.name, c.total) for c in columns]

    page = await client.get("/")
    assert page.status_code == 200
    assert "Rotawise Roadmap" in page.text and 'href="https://www.rotawise.example"' in page.text  # branding
    for column in columns:
        assert column.items[0].title in page.text
    declined = await client.get("/?stage=declined")
    assert "Built-in team chat" in declined.text

    items = _items(session)
    labels = {item.timeframe_label for item in items}
    assert {"Now", "Next", "Later"} <= labels
    assert any(re.fullmatch(r"\d{4} Q[1-4]", label) for label in labels)
    public = [i for i in items if i.published_at and i.visibility is Visibility.public]
    assert all(0 < i.vote_count <= 140 for i in public)


async def test_changelog_has_a_dated_history_and_items_a_coherent_timeline(client, session, seeded):
    released = [d for d in seed.ITEMS if d.release_notes]
    assert len(released) >= 5
    page = await client.get("/changelog")
    positions = [page.text.index(d.title) for d in released]
    # ITEMS lists them oldest release first; the changelog shows the newest first.
    assert positions == sorted(positions, reverse=True)
    assert "Update the app to version 4.2 or later" in page.text
    # The PM's entries group released items under their own words; the other releases stand alone.
    entries = [page.text.index(entry.title) for entry in seed.CHANGELOG]
    assert entries == sorted(entries, reverse=True) and entries[-1] < positions[-1]
    assert "Thank you to everyone who voted for these" in page.text
    release_dates = sorted(i.released_at for i in _items(session) if i.released_at)
    assert (release_dates[-1] - release_dates[0]).days > 90

    item = next(i for i in _items(session) if i.title == "Payroll export to Gusto and ADP")
    timeline = roadmap.get_timeline(session, item)
    assert [c.to_stage.name for c in timeline] == ["Under consideration", "Planned", "In progress", "Released"]
    dates = [c.changed_at for c in timeline]
    assert dates == sorted(dates) and len(set(dates)) == 4
    assert item.released_at == dates[-1]
    assert item.created_at <= item.published_at < dates[1]
    item_page = await client.get(item.path)
    assert "Moved from In progress to <strong>Released</strong>" in item_page.text

    events, _ = audit.list_events(session, per_page=500)
    assert {"item.created", "item.published", "item.moved", "product.created", "tag.created"} <= {
        e.action for e in events}
    assert events[0].actor_label == seed.PM_EMAIL  # the newest event: the PM's latest draft


async def test_a_visitor_sees_no_drafts_internal_or_customer_items_and_search_finds_prefixes(
        client, session, seeded):
    items = _items(session)
    hidden = [i for i in items if i.published_at is None or i.visibility is not Visibility.public]
    assert sum(i.published_at is None for i in hidden) == 2
    assert sum(i.visibility is Visibility.internal for i in hidden) == 2
    assert sum(i.visibility is Visibility.customers for i in hidden) == 2
    board = (await client.get("/")).text
    for item in hidden:
        assert item.title not in board
        assert (await client.get(f"/items/{item.public_id}")).status_code == 404
    assert "Tip pooling" not in (await client.get("/search", params={"q": "tip pool"})).text

    found = await client.get("/search", params={"q": "geofen"})
    assert found.status_code == 200
    assert "Clock in from your phone" in found.text


async def test_the_demo_admin_signs_in_through_the_login_form(client, seeded):
    assert seed.DEMO_PASSWORD in seeded and seed.ADMIN_EMAIL in seeded and seed.PM_EMAIL in seeded
    response = await post_form(client, "/login", {"email": seed.ADMIN_EMAIL, "password": seed.DEMO_PASSWORD},
                               page="/login")
    assert response.status_code == 303
    assert response.headers["location"] == "/admin"
    assert "AI-suggested rotas" in (await client.get("/")).text  # staff see the drafts


def test_seeding_again_adds_nothing(session, seeded):
    count = len(_items(session))
    assert "not loaded" in seed.seed_demo(session)
    assert len(_items(session)) == count


def test_an_existing_staff_account_keeps_its_password(session):
    accounts.create_user(session, email=seed.ADMIN_EMAIL, role=Role.admin,
                         password_hash=passwords.hash_password_blocking("their-own-password"))
    summary = seed.seed_demo(session)
    admin = accounts.get_user_by_email(session, seed.ADMIN_EMAIL)
    assert passwords.verify_password_blocking(admin.password_hash, "their-own-password")
    assert not passwords.verify_password_blocking(admin.password_hash, seed.DEMO_PASSWORD)
    assert f"{seed.PM_EMAIL}  (product manager)" in summary
    assert f"{seed.ADMIN_EMAIL}  (admin)" not in summary


# --- the customer part: segments, organisations, customers, segment-limited items ---------------------


def _customer(session: Session, email: str):  # type: ignore[no-untyped-def]
    user = accounts.get_user_by_email(session, email)
    assert user is not None and user.role is Role.customer
    return user


async def test_customers_of_each_segment_see_the_items_meant_for_them(client, session, seeded):
    from app.organisations import service as organisations

    segments = {s.name: s.weight for s in organisations.list_segments(session)}
    assert segments == {"Starter": 1, "Business": 2, "Enterprise": 4}
    rows = organisations.list_organisations(session)
    assert len(rows) == 6 and all(r.organisation.domains and r.organisation.revenue > 0 for r in rows)
    assert sum(r.members for r in rows) > len(seed.CUSTOMERS)  # the named customers and the demo voters

    everyone, enterprise_only = "Custom roles and permissions", "Stream the audit log to your SIEM"
    enterprise = _customer(session, "maya.chen@harbourhealth.example")
    business = _customer(session, "lucia.romero@copperkettle.example")
    starter = _customer(session, "owen.price@lanterncoffee.example")

    sign_in(client, session, enterprise)
    board = (await client.get("/")).text
    assert everyone in board and enterprise_only in board
    for user in (business, starter):
        sign_in(client, session, user)
        board = (await client.get("/")).text
        assert everyone in board and enterprise_only not in board
    siem = next(i for i in _items(session) if i.title == enterprise_only)
    assert (await client.get(siem.path)).status_code == 404


async def test_the_demo_customer_signs_in_with_the_demo_password(client, seeded):
    assert seed.DEMO_CUSTOMER_EMAIL in seeded
    response = await post_form(client, "/login", {"email": seed.DEMO_CUSTOMER_EMAIL, "password": seed.DEMO_PASSWORD},
                               page="/login")
    assert response.status_code == 303 and response.headers["location"] == "/"
    assert "Stream the audit log to your SIEM" in (await client.get("/")).text
    assert (await client.get("/admin")).status_code == 404  # a customer, not staff


def test_a_new_customer_at_a_demo_domain_joins_that_organisation(session, seeded):
    from app.accounts.models import IdentityKind

    claims = accounts.IdentityClaims(kind=IdentityKind.email, issuer="email", subject="new@copperkettle.example",
                                     email="new@copperkettle.example", email_verified=True)
    user = accounts.sign_in_identity(session, claims=claims)
    assert user.organisation_id == _customer(session, "lucia.romero@copperkettle.example").organisation_id


def test_seeding_again_adds_no_customers_organisations_or_segments(session, seeded):
    from app.accounts.models import User
    from app.organisations.models import Organisation, Segment

    def counts() -> tuple[int, ...]:
        return tuple(len(session.scalars(select(model)).all()) for model in (User, Organisation, Segment))

    before = counts()
    seed.seed_demo(session)
    assert counts() == before
    # The customer part on its own is idempotent too (reused, not duplicated).
    admin = accounts.get_user_by_email(session, seed.ADMIN_EMAIL)
    segments, companies = seed._customer_companies(session, admin=admin, when=admin.created_at)
    assert seed._customers(session, companies=companies, now=admin.created_at, with_password=True) == []
    assert counts() == before and len(companies) == 6 and len(segments) == 3



def test_demo_vote_counts_are_real_vote_rows(session):
    from sqlalchemy import func, select

    from app.roadmap.models import Item
    from app.voting import service as voting
    from app.voting.models import Vote

    seed.seed_demo(session)
    assert voting.reconcile(session, fix=False) == []
    total = session.scalar(select(func.count()).select_from(Vote))
    assert total > 500
    assert session.scalar(select(func.sum(Item.vote_count))) == total
    popular = session.scalar(select(Item).order_by(Item.vote_count.desc()).limit(1))
    assert popular.vote_count >= 100


# --- what customers said: the inbox and the moderation queue are not empty on first look -------------


async def test_the_inbox_holds_ideas_reasons_and_notes_and_moderation_has_reported_comments(client, session, seeded):
    from app.discussion import service as discussion
    from app.feedback import service as feedback
    from app.feedback.models import FeedbackKind, FeedbackState

    entries, total = feedback.list_inbox(session, filters=feedback.InboxFilters.parse(), per_page=100)
    assert total == len(entries) >= 15
    kinds = {e.feedback.kind for e in entries}
    assert kinds == {FeedbackKind.idea, FeedbackKind.reason, FeedbackKind.note}
    states = {e.feedback.state for e in entries}
    assert {FeedbackState.new, FeedbackState.linked, FeedbackState.declined, FeedbackState.archived} <= states
    assert sum(e.feedback.state is FeedbackState.new for e in entries) >= 3  # something to triage
    reasons = [e for e in entries if e.feedback.kind is FeedbackKind.reason]
    assert reasons and all(e.importance is not None and e.item is not None for e in reasons)
    assert any(e.captured_by is not None and e.author is not None and e.author.is_placeholder for e in entries)
    newest = max(e.feedback.created_at for e in entries)
    assert (seed.utcnow() - newest).days < 3 and all(e.feedback.created_at <= seed.utcnow() for e in entries)

    flagged = discussion.list_open_reports(session)
    assert len(flagged) == len(seed.REPORTED) and all(f.reports for f in flagged)

    sign_in(client, session, accounts.get_user_by_email(session, seed.PM_EMAIL))
    inbox = (await client.get("/admin/feedback")).text
    assert "Export approved hours to Sage Payroll" in inbox and "Voted critical" in inbox
    moderation = (await client.get("/admin/moderation")).text
    assert "message me for a quote" in moderation
    assert "What customers said" in seeded and "/admin/moderation" in seeded


async def test_an_item_that_thanks_people_for_their_comments_has_them(client, session, seeded):
    chat = next(i for i in _items(session) if i.title == "Built-in team chat")
    assert "your comments shaped" in chat.description
    page = (await client.get(f"{chat.path}")).text
    assert "Please don&#39;t build another chat" in page or "Please don't build another chat" in page
    assert "your comments decided this one" in page  # the team's pinned answer
    for demo in seed.ITEMS:
        if "comment" in demo.description.lower():
            assert any(title == demo.title for title, *_ in seed.COMMENTS), demo.title


async def test_the_summary_names_the_sign_in_form_the_login_page_has(client, seeded):
    login = (await client.get("/login")).text
    heading = re.search(r"under “([^”]+)” as " + re.escape(seed.DEMO_CUSTOMER_EMAIL), seeded)
    assert heading is not None, seeded
    assert f">{heading.group(1)}</h2>" in login


def test_the_seed_output_and_the_readme_count_the_customers_the_people_page_lists(session, seeded):
    customers = list(session.scalars(select(User).where(User.role == Role.customer)))
    with_account = sum(1 for u in customers if not u.is_placeholder)
    contacts = len(customers) - with_account
    assert f"{with_account} customer accounts (" in seeded
    assert f" and {contacts} contact without an account yet" in seeded and contacts == 1
    readme = " ".join((Path(__file__).resolve().parents[1] / "README.md").read_text().split())
    assert f"{with_account} customer accounts with real votes" in readme
    assert f"({len(customers)} people on the People page)" in readme


async def test_the_technology_roadmap_starts_with_initiatives_links_and_a_webhook(client, session, seeded):
    from app.tech.models import BacklogLink, Initiative, TrackerHook

    initiatives = list(session.scalars(select(Initiative).order_by(Initiative.title)))
    assert len(initiatives) == 2 and all(i.owner_id is not None for i in initiatives)
    assert session.query(BacklogLink).count() == 6 and session.query(TrackerHook).count() == 1
    staff = session.scalar(select(User).where(User.email == seed.PM_EMAIL))
    sign_in(client, session, staff)
    listed = (await client.get("/admin/tech")).text
    assert "Offline-first sync engine" in listed and "Schedule grid rewrite" in listed and "No links" not in listed
    grid = session.scalar(select(Item).where(Item.title == "Schedules for 1,000+ staff load in under a second"))
    assert "38% delivered" in (await client.get(f"/admin/items/{grid.public_id}")).text  # 5 of 13 points
    assert "GitHub rotawise/mobile" in (await client.get("/admin/tech/hooks")).text
    client.cookies.clear()
    page = (await client.get(grid.path)).text
    assert "About 38% delivered" in page and "WEB-201" not in page


async def test_the_desk_has_rice_and_decisions_on_record(client, session, seeded):
    """A new PM sees the desk's features with the demo: RICE figures, and decisions with their snapshot."""
    sign_in(client, session, session.scalars(select(User).where(User.email == seed.PM_EMAIL)).one())
    page = await client.get("/admin/desk?window=all&sort=rice")
    rice = re.findall(r'data-col="rice">([^<]*)</td>', page.text)
    assert sum(1 for r in rice if r.strip() not in ("", "—")) == len(seed.DEMO_RICE)
    recorded = list(session.scalars(select(Decision)))
    stage_names = {s.slug: s.name for s in roadmap.list_stages(session)}
    assert {(d.to_stage_name, d.why) for d in recorded} == {
        (stage_names[stage], why) for _, stage, why in seed.DEMO_DECISIONS}
    assert all(d.numbers["voters"] > 0 and d.weights for d in recorded)  # the snapshot of the moment
    decisions_page = await client.get("/admin/decisions")
    assert all(why in decisions_page.text for _, _, why in seed.DEMO_DECISIONS) or all(
        why.replace("'", "&#39;") in decisions_page.text for _, _, why in seed.DEMO_DECISIONS)
