"""Organisations, segments and people in /admin, and the segment limit in the item editor."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import IdentityKind, Role, UserSession
from app.audit.models import AuditEvent
from app.deps import SESSION_COOKIE
from app.organisations.models import Organisation, OrganisationDomain, Segment
from app.roadmap.models import Item, Visibility, item_segments
from tests.factories import make_admin, make_item, make_pm, make_product, make_user, stage
from tests.helpers.http import post_form, sign_in


@pytest.fixture
def admin(client, session):  # type: ignore[no-untyped-def]
    user = make_admin(session, email="ada@example.com", display_name="Ada Admin")
    sign_in(client, session, user)
    return user


def make_segment(session, name: str, weight: str = "1") -> Segment:  # type: ignore[no-untyped-def]
    segment = Segment(name=name, slug=name.lower(), weight=Decimal(weight))
    session.add(segment)
    session.flush()
    return segment


def make_organisation(session, name: str, *, domains: tuple[str, ...] = (), segment: Segment | None = None,
                      revenue: str = "0") -> Organisation:  # type: ignore[no-untyped-def]
    organisation = Organisation(name=name, segment_id=segment.id if segment else None, revenue=Decimal(revenue),
                                domains=[OrganisationDomain(domain=d) for d in domains])
    session.add(organisation)
    session.flush()
    return organisation


def email_claims(email: str) -> accounts.IdentityClaims:
    """What the magic-link sign-in hands over: the address, verified by the link itself."""
    return accounts.IdentityClaims(kind=IdentityKind.email, issuer="email", subject=email, email=email,
                                   email_verified=True)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


class TestOrganisations:
    async def test_an_organisation_with_a_domain_takes_in_new_customers_who_sign_in_at_it(
            self, client, session, admin):
        enterprise = make_segment(session, "Enterprise", "4")
        response = await post_form(client, "/admin/organisations", {
            "name": "  Acme   Health ", "domains": "Acme.example, @acme-health.example\nacme.example",
            "segment_id": str(enterprise.id), "revenue": "48,000",
        }, page="/admin/organisations")
        assert response.status_code == 303
        organisation = session.scalar(select(Organisation).where(Organisation.name == "Acme Health"))
        assert organisation is not None and organisation.revenue == Decimal(48000)

        listing = _text((await client.get("/admin/organisations")).text)
        assert "Acme Health Enterprise 48,000 acme-health.example, acme.example 0" in listing

        newcomer = accounts.sign_in_identity(session, claims=email_claims("nora@acme.example"))
        assert newcomer.organisation_id == organisation.id
        other_domain = accounts.sign_in_identity(session, claims=email_claims("olav@elsewhere.example"))
        assert other_domain.organisation_id is None

        page = await client.get(f"/admin/organisations/{organisation.id}")
        assert "nora@acme.example" in page.text and "olav@elsewhere.example" not in page.text
        assert "1 member" in _text(page.text)

    async def test_a_domain_of_another_organisation_is_refused_by_name_and_nothing_is_saved(
            self, client, session, admin):
        acme = make_organisation(session, "Acme", domains=("acme.example",))
        response = await post_form(client, "/admin/organisations", {
            "name": "Beta Foods", "domains": "beta.example\nACME.example", "revenue": "100",
        }, page="/admin/organisations")
        assert response.status_code == 422
        assert "acme.example already belongs to Acme" in response.text
        assert 'value="Beta Foods"' in response.text and "beta.example\nACME.example" in response.text
        assert session.scalar(select(Organisation).where(Organisation.name == "Beta Foods")) is None
        assert session.scalar(select(OrganisationDomain).where(OrganisationDomain.domain == "beta.example")) is None

        # Editing another organisation to take it is refused the same way; the organisation keeps its own.
        beta = make_organisation(session, "Beta", domains=("beta.example",))
        response = await post_form(client, f"/admin/organisations/{beta.id}", {
            "name": "Beta", "domains": "beta.example, acme.example", "revenue": "0",
        }, page=f"/admin/organisations/{beta.id}")
        assert response.status_code == 422
        assert "acme.example already belongs to Acme" in response.text
        owners = dict(session.execute(select(OrganisationDomain.domain, OrganisationDomain.organisation_id)).all())
        assert owners == {"acme.example": acme.id, "beta.example": beta.id}

    async def test_bad_input_is_explained_field_by_field(self, client, session, admin):
        response = await post_form(client, "/admin/organisations", {
            "name": "", "domains": "acme.example, not_a_domain", "revenue": "-5",
        }, page="/admin/organisations")
        assert response.status_code == 422
        assert "A name is required." in response.text
        assert "Not an email domain: “not_a_domain”." in response.text
        assert "Revenue cannot be negative" in response.text

    async def test_editing_changes_domains_and_segment_and_is_audited(self, client, session, admin):
        starter, business = make_segment(session, "Starter"), make_segment(session, "Business", "2")
        acme = make_organisation(session, "Acme", domains=("acme.example", "old.example"), segment=starter)
        response = await post_form(client, f"/admin/organisations/{acme.id}", {
            "name": "Acme Inc", "domains": "acme.example\nnew.example", "segment_id": str(business.id),
            "revenue": "1250.50",
        }, page=f"/admin/organisations/{acme.id}")
        assert response.status_code == 303
        page = await client.get(response.headers["location"])
        assert "Organisation “Acme Inc” saved." in page.text
        assert "acme.example\nnew.example" in page.text
        session.expire_all()
        assert session.scalar(select(OrganisationDomain.domain).where(OrganisationDomain.domain == "old.example")) is None
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "organisation.updated"))
        assert event.changes["segment"] == ["Starter", "Business"]
        assert event.changes["domains"] == [["acme.example", "old.example"], ["acme.example", "new.example"]]

    async def test_deleting_an_organisation_keeps_its_members_accounts(self, client, session, admin):
        acme = make_organisation(session, "Acme", domains=("acme.example",))
        member = make_user(session, email="mia@acme.example", organisation_id=acme.id)
        acme_id = acme.id
        page = await client.get(f"/admin/organisations/{acme.id}")
        assert "keeps their account but no longer belongs to an organisation" in _text(page.text)
        response = await post_form(client, f"/admin/organisations/{acme.id}/delete", page="/admin/organisations")
        assert response.status_code == 303
        flash = (await client.get("/admin/organisations")).text
        assert "Its 1 member kept their accounts, without an organisation." in flash
        session.expire_all()
        assert session.get(Organisation, acme_id) is None
        assert accounts.get_user_by_email(session, "mia@acme.example").organisation_id is None
        assert session.scalar(select(OrganisationDomain)) is None
        assert member.id == accounts.get_user_by_email(session, "mia@acme.example").id

    async def test_customers_cannot_open_the_pages_and_pms_can(self, client, session):
        customer = make_user(session)
        sign_in(client, session, customer)
        assert (await client.get("/admin/organisations")).status_code == 404
        sign_in(client, session, make_pm(session))
        assert (await client.get("/admin/organisations")).status_code == 200
        assert (await client.get("/admin/segments")).status_code == 200
        assert (await client.get("/admin/people")).status_code == 200


class TestMovingPeople:
    async def test_moving_a_person_changes_which_segment_limited_items_they_see(self, client, session, admin):
        starter, enterprise = make_segment(session, "Starter"), make_segment(session, "Enterprise", "4")
        small = make_organisation(session, "Corner Shop", segment=starter)
        big = make_organisation(session, "Megacorp", segment=enterprise)
        item = make_item(session, visibility=Visibility.customers, title="Secret enterprise dashboard")
        session.execute(item_segments.insert().values(item_id=item.id, segment_id=enterprise.id))
        carla = make_user(session, email="carla@corner.example", display_name="Carla", organisation_id=small.id)

        response = await post_form(client, f"/admin/people/{carla.id}/organisation",
                                   {"organisation_id": str(big.id), "return_to": f"/admin/organisations/{small.id}"},
                                   page=f"/admin/organisations/{small.id}")
        assert response.status_code == 303
        assert response.headers["location"] == f"/admin/organisations/{small.id}"
        page = await client.get(f"/admin/organisations/{big.id}")
        assert "carla@corner.example" in page.text
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "user.moved"))
        assert event.changes == {"organisation": ["Corner Shop", "Megacorp"]} and event.actor_id == admin.id

        sign_in(client, session, carla)
        assert (await client.get(item.path)).status_code == 200
        assert "Secret enterprise dashboard" in (await client.get("/")).text

        sign_in(client, session, admin)
        await post_form(client, f"/admin/people/{carla.id}/organisation",
                        {"organisation_id": str(small.id)}, page="/admin/people")
        sign_in(client, session, carla)
        assert (await client.get(item.path)).status_code == 404
        assert "Secret enterprise dashboard" not in (await client.get("/")).text

        sign_in(client, session, admin)
        await post_form(client, f"/admin/people/{carla.id}/organisation", {"organisation_id": ""}, page="/admin/people")
        session.expire_all()
        assert accounts.get_user_by_email(session, "carla@corner.example").organisation_id is None

    async def test_staff_accounts_are_not_moved_from_here(self, client, session, admin):
        acme = make_organisation(session, "Acme")
        pm = make_pm(session)
        response = await post_form(client, f"/admin/people/{pm.id}/organisation",
                                   {"organisation_id": str(acme.id)}, page="/admin/people")
        assert response.status_code == 404


class TestPeople:
    async def test_search_by_email_or_name_and_filter_by_organisation(self, client, session, admin):
        acme = make_organisation(session, "Acme")
        make_user(session, email="zoe@acme.example", display_name="Zoe Quartz", organisation_id=acme.id)
        make_user(session, email="yuri@other.example", display_name="Yuri Basalt")
        make_user(session, email="xena@acme.example", display_name="Xena", organisation_id=acme.id)

        everyone = (await client.get("/admin/people")).text
        assert all(e in everyone for e in ("zoe@acme.example", "yuri@other.example", "xena@acme.example"))
        assert "ada@example.com" not in everyone  # staff are on the staff page

        by_name = (await client.get("/admin/people", params={"q": "quartz"})).text
        assert "zoe@acme.example" in by_name and "xena@acme.example" not in by_name
        by_email = (await client.get("/admin/people", params={"q": "OTHER.example"})).text
        assert "yuri@other.example" in by_email and "zoe@acme.example" not in by_email

        in_acme = (await client.get("/admin/people", params={"organisation": str(acme.id)})).text
        assert "zoe@acme.example" in in_acme and "xena@acme.example" in in_acme
        assert "yuri@other.example" not in in_acme
        assert "2 customers match" in in_acme
        without = (await client.get("/admin/people", params={"organisation": "none"})).text
        assert "yuri@other.example" in without and "zoe@acme.example" not in without

        nobody = (await client.get("/admin/people", params={"q": "50%_off"})).text
        assert "Nobody matches" in nobody

    async def test_disabling_a_customer_ends_their_sessions_and_enabling_lets_them_back(
            self, client, session, admin):
        customer = make_user(session, email="dora@example.org", display_name="Dora")
        token = accounts.start_session(session, user=customer)
        response = await post_form(client, f"/admin/people/{customer.id}/active", {"active": "0"},
                                   page="/admin/people")
        assert response.status_code == 303
        assert "Dora is disabled and signed out everywhere." in (await client.get("/admin/people")).text
        assert accounts.load_session(session, token) is None
        assert not session.scalars(select(UserSession).where(UserSession.user_id == customer.id)).all()

        client.cookies.set(SESSION_COOKIE, token)
        assert (await client.get("/me")).status_code in (303, 307)  # signed out: sent to sign in
        sign_in(client, session, admin)

        await post_form(client, f"/admin/people/{customer.id}/active", {"active": "1"}, page="/admin/people")
        session.expire_all()
        assert accounts.get_user_by_email(session, "dora@example.org").is_active
        event = session.scalars(select(AuditEvent).where(AuditEvent.action == "user.updated")
                                .order_by(AuditEvent.id)).all()
        assert [e.changes["is_active"] for e in event] == [[True, False], [False, True]]


class TestSegments:
    async def test_create_edit_and_weight_rules(self, client, session, admin):
        response = await post_form(client, "/admin/segments", {"name": "Enterprise", "weight": ""},
                                   page="/admin/segments")
        assert response.status_code == 303
        segment = session.scalar(select(Segment).where(Segment.name == "Enterprise"))
        assert segment.weight == Decimal(1)  # the default

        for bad, message in (("0", "The weight must be more than 0."), ("-2", "The weight must be more than 0."),
                             ("lots", "Enter the weight as a number")):
            response = await post_form(client, f"/admin/segments/{segment.id}",
                                       {"name": "Enterprise", "weight": bad}, page="/admin/segments")
            assert response.status_code == 422 and message in response.text
        duplicate = await post_form(client, "/admin/segments", {"name": "enterprise", "weight": "2"},
                                    page="/admin/segments")
        assert duplicate.status_code == 422 and "There is already a segment called “enterprise”." in duplicate.text

        response = await post_form(client, f"/admin/segments/{segment.id}", {"name": "Enterprise", "weight": "4"},
                                   page="/admin/segments")
        assert response.status_code == 303
        listing = _text((await client.get("/admin/segments")).text)
        assert "Segment “Enterprise” saved." in listing and "Enterprise 4 0 0" in listing

    async def test_deleting_a_segment_says_which_items_open_up_and_removes_the_links(
            self, client, session, admin):
        enterprise, business = make_segment(session, "Enterprise", "4"), make_segment(session, "Business", "2")
        acme = make_organisation(session, "Acme", segment=enterprise)
        only = make_item(session, visibility=Visibility.customers, title="Only for enterprise")
        both = make_item(session, visibility=Visibility.customers, title="For business and enterprise")
        session.execute(item_segments.insert().values([
            {"item_id": only.id, "segment_id": enterprise.id},
            {"item_id": both.id, "segment_id": enterprise.id}, {"item_id": both.id, "segment_id": business.id},
        ]))

        page = _text((await client.get(f"/admin/segments/{enterprise.id}")).text)
        assert "1 organisation in it is left without a segment" in page
        assert "2 items limited to it are no longer limited to Enterprise." in page
        assert "1 item limited to Enterprise alone then becomes visible to every signed-in customer: Only for enterprise" in page
        assert "For business and enterprise If" not in page

        response = await post_form(client, f"/admin/segments/{enterprise.id}/delete", page="/admin/segments")
        assert response.status_code == 303
        flash = _text((await client.get("/admin/segments")).text)
        assert "Segment “Enterprise” deleted. 1 organisation now has no segment." in flash
        assert "“Only for enterprise”" in flash
        enterprise_id, acme_id = enterprise.id, acme.id
        session.expire_all()
        assert session.get(Segment, enterprise_id) is None
        assert session.get(Organisation, acme_id).segment_id is None
        links = session.execute(select(item_segments.c.item_id, item_segments.c.segment_id)).all()
        assert links == [(both.id, business.id)]


class TestItemEditorSegments:
    async def test_the_segment_limit_round_trips_and_hides_the_item_from_other_segments(
            self, client, session, admin):
        starter, enterprise = make_segment(session, "Starter"), make_segment(session, "Enterprise", "4")
        product = make_product(session, name="Web")
        stage_id = str(stage(session, "planned").id)
        new = await client.get("/admin/items/new")
        assert "Limit to segments" in new.text and "Starter" in new.text

        response = await post_form(client, "/admin/items", {
            "title": "Audit log streaming", "product_id": str(product.id), "stage_id": stage_id,
            "timeframe": "later", "visibility": "customers", "segments": [str(enterprise.id)], "action": "publish",
        }, page="/admin/items/new")
        assert response.status_code == 303
        item = session.scalar(select(Item).where(Item.title == "Audit log streaming"))

        edit = await client.get(response.headers["location"])
        ticked = re.findall(r'<input type="checkbox" name="segments" value="(\d+)"[^>]*?( checked)?>', edit.text)
        assert (str(enterprise.id), " checked") in ticked and (str(starter.id), "") in ticked
        event = session.scalar(select(AuditEvent).where(AuditEvent.action == "item.created"))
        assert event.changes["segments"] == [None, ["Enterprise"]]

        small = make_organisation(session, "Corner Shop", segment=starter)
        big = make_organisation(session, "Megacorp", segment=enterprise)
        outsider = make_user(session, organisation_id=small.id)
        insider = make_user(session, organisation_id=big.id)
        sign_in(client, session, outsider)
        assert (await client.get(item.path)).status_code == 404
        sign_in(client, session, insider)
        assert (await client.get(item.path)).status_code == 200

        # Untick everything: every signed-in customer sees it; the change is in the item's audit trail.
        sign_in(client, session, admin)
        response = await post_form(client, f"/admin/items/{item.public_id}", {
            "title": "Audit log streaming", "product_id": str(product.id), "stage_id": stage_id,
            "timeframe": "later", "visibility": "customers",
        }, page=f"/admin/items/{item.public_id}")
        assert response.status_code == 303
        updated = session.scalar(select(AuditEvent).where(AuditEvent.action == "item.updated"))
        assert updated.changes["segments"] == [["Enterprise"], []]
        sign_in(client, session, outsider)
        assert (await client.get(item.path)).status_code == 200

    async def test_segments_are_dropped_when_the_item_is_not_for_customers(self, client, session, admin):
        enterprise = make_segment(session, "Enterprise", "4")
        product = make_product(session, name="Web")
        response = await post_form(client, "/admin/items", {
            "title": "Public thing", "product_id": str(product.id), "stage_id": str(stage(session, "planned").id),
            "timeframe": "later", "visibility": "public", "segments": [str(enterprise.id)],
        }, page="/admin/items/new")
        assert response.status_code == 303
        item = session.scalar(select(Item).where(Item.title == "Public thing"))
        assert not session.execute(select(item_segments).where(item_segments.c.item_id == item.id)).all()


def test_role_of_a_moved_person_is_unchanged(session):
    """Moving only touches the organisation (a customer stays a customer)."""
    from app.organisations import service as organisations

    admin = make_admin(session)
    acme = make_organisation(session, "Acme")
    person = make_user(session)
    assert organisations.move_person(session, user=person, organisation=acme, actor=admin)
    assert not organisations.move_person(session, user=person, organisation=acme, actor=admin)
    assert person.role is Role.customer and person.organisation_id == acme.id
