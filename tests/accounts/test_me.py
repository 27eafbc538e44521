"""/me: a person's own page, the download of their data, and deleting their account."""

from __future__ import annotations

import json

from sqlalchemy import func, select

from app.accounts import service as accounts
from app.accounts.models import Identity, IdentityKind, User, UserSession
from app.audit.models import AuditEvent
from app.deps import SESSION_COOKIE
from app.organisations.models import Organisation, Segment
from tests.factories import PASSWORD, make_admin, make_pm, make_user
from tests.helpers.http import csrf_token, post_form, sign_in


def make_customer(session, **overrides):  # type: ignore[no-untyped-def]
    segment = Segment(slug="enterprise-me", name="Enterprise")
    session.add(segment)
    session.flush()
    organisation = Organisation(name="Acme Logistics", segment_id=segment.id)
    session.add(organisation)
    session.flush()
    return make_user(session, email="dana@acme.example", display_name="Dana Scully",
                     organisation_id=organisation.id, **overrides)


def add_identity(session, user, **overrides):  # type: ignore[no-untyped-def]
    identity = Identity(user_id=user.id, kind=overrides.pop("kind", IdentityKind.oidc),
                        issuer=overrides.pop("issuer", "https://id.acme.example"),
                        subject=overrides.pop("subject", "acme-sub-4711"), email=user.email, **overrides)
    session.add(identity)
    session.flush()
    return identity


async def _login(client, email, password):  # type: ignore[no-untyped-def]
    token = await csrf_token(client, "/")
    return await client.post("/login", data={"email": email, "password": password, "csrf_token": token})


def _count(session, model, *where):  # type: ignore[no-untyped-def]
    return session.scalar(select(func.count()).select_from(model).where(*where))


class TestProfile:
    async def test_signed_out_visitors_are_sent_to_sign_in_and_come_back(self, client):
        response = await client.get("/me")
        assert response.status_code == 303
        assert response.headers["location"] == "/login?next=/me"

    async def test_shows_name_email_organisation_and_segment(self, client, session):
        sign_in(client, session, make_customer(session))

        page = await client.get("/me")

        assert page.status_code == 200
        for text in ("Dana Scully", "dana@acme.example", "Acme Logistics", "Enterprise", "Download my data",
                     "Delete my account"):
            assert text in page.text, text
        assert page.headers["cache-control"] == "no-store"

    async def test_a_customer_without_organisation_is_told_why_they_see_the_public_roadmap(self, client, session):
        sign_in(client, session, make_user(session, email="solo@gmail.example"))

        page = await client.get("/me")

        assert "not part of a customer organisation" in page.text
        assert "Segment" not in page.text

    async def test_the_header_links_a_customers_name_to_their_page_and_staffs_to_theirs(self, client, session):
        sign_in(client, session, make_customer(session))
        assert '<a href="/me" class="account-name">Dana Scully</a>' in (await client.get("/")).text

        client.cookies.clear()
        sign_in(client, session, make_pm(session, display_name="Paula PM"))
        assert '<a href="/account/password" class="account-name">Paula PM</a>' in (await client.get("/")).text

    async def test_lists_how_the_person_signs_in(self, client, session):
        customer = make_customer(session, password=None)
        add_identity(session, customer)
        add_identity(session, customer, kind=IdentityKind.email, issuer="email", subject=customer.email)
        sign_in(client, session, customer)

        page = (await client.get("/me")).text

        assert "https://id.acme.example" in page and "Email sign-in link" in page
        assert "Change your password" not in page


class TestEditName:
    async def test_someone_who_gave_no_name_is_told_which_one_they_are_shown_under(self, client, session):
        customer = make_user(session, email="newbie@freshco.example", display_name="")
        sign_in(client, session, customer)
        page = (await client.get("/me")).text
        assert "Until you give one, you are shown as “newbie”." in page and 'value=""' in page
        await post_form(client, "/me", {"display_name": "Nadia"}, page="/me")
        assert "Until you give one" not in (await client.get("/me")).text

    async def test_a_new_name_is_saved_and_shown(self, client, session):
        customer = make_customer(session)
        sign_in(client, session, customer)

        response = await post_form(client, "/me", {"display_name": "  Dana   K. Scully "}, page="/me")

        assert response.status_code == 303 and response.headers["location"] == "/me"
        page = await client.get("/me")
        assert "Your name is saved." in page.text
        assert '<a href="/me" class="account-name">Dana K. Scully</a>' in page.text
        session.refresh(customer)
        assert customer.display_name == "Dana K. Scully"

    async def test_a_too_long_name_is_refused_and_what_was_typed_kept(self, client, session):
        customer = make_customer(session)
        sign_in(client, session, customer)
        typed = "Dana " + "x" * 130

        response = await post_form(client, "/me", {"display_name": typed}, page="/me")

        assert response.status_code == 422
        assert "Keep it to 120 characters" in response.text
        assert f'value="{typed}"' in response.text
        assert 'aria-invalid="true"' in response.text
        session.refresh(customer)
        assert customer.display_name == "Dana Scully"

    async def test_an_empty_name_is_refused(self, client, session):
        sign_in(client, session, make_customer(session))
        response = await post_form(client, "/me", {"display_name": "   "}, page="/me")
        assert response.status_code == 422
        assert "Enter your name." in response.text


class TestExport:
    async def test_downloads_everything_about_me_and_no_secret(self, client, session):
        customer = make_customer(session)
        add_identity(session, customer)
        token = accounts.start_session(session, user=customer, user_agent="Firefox/140 on Linux")
        client.cookies.set(SESSION_COOKIE, token)
        await post_form(client, "/me", {"display_name": "Dana K. Scully"}, page="/me")

        response = await client.get("/me/export")

        assert response.status_code == 200
        assert response.headers["content-type"].startswith("application/json")
        assert response.headers["content-disposition"].startswith('attachment; filename="my-data-')
        data = response.json()
        assert data["profile"]["email"] == "dana@acme.example"
        assert data["profile"]["display_name"] == "Dana K. Scully"
        assert data["organisation"] == {"name": "Acme Logistics", "segment": "Enterprise"}
        [identity] = data["identities"]
        assert identity["kind"] == "oidc" and identity["issuer"] == "https://id.acme.example"
        assert identity["email"] == "dana@acme.example" and identity["created_at"]
        assert [s["user_agent"] for s in data["sessions"]] == ["Firefox/140 on Linux"]
        assert set(data["sessions"][0]) == {"created_at", "expires_at", "user_agent"}
        assert [(e["action"], e["changes"]) for e in data["audit_events"]] == [
            ("user.updated", {"display_name": ["Dana Scully", "Dana K. Scully"]})]

        raw = response.text
        session_ids = session.scalars(select(UserSession.id).where(UserSession.user_id == customer.id)).all()
        for secret in (token, *session_ids, customer.password_hash):
            assert secret and secret not in raw
        assert "hash" not in raw and "password" not in raw.replace('"has_password"', "")

    async def test_someone_elses_data_is_not_in_my_export(self, client, session):
        other = make_user(session, email="other@acme.example")
        add_identity(session, other, subject="other-sub")
        sign_in(client, session, make_customer(session))

        raw = (await client.get("/me/export")).text

        assert "other@acme.example" not in raw and "other-sub" not in raw

    async def test_signed_out_cannot_download(self, client):
        response = await client.get("/me/export")
        assert response.status_code == 303 and response.headers["location"].startswith("/login")


class TestDelete:
    async def test_the_email_must_be_typed_to_confirm(self, client, session):
        customer = make_customer(session)
        sign_in(client, session, customer)

        response = await post_form(client, "/me/delete", {"confirm_email": "someone@else.example"}, page="/me")

        assert response.status_code == 422
        assert "Type your email address exactly" in response.text
        assert 'value="someone@else.example"' in response.text
        session.refresh(customer)
        assert customer.deleted_at is None and customer.email == "dana@acme.example"

    async def test_deleting_erases_identity_data_and_keeps_an_anonymous_row(self, client, session):
        customer = make_customer(session)
        add_identity(session, customer)
        sign_in(client, session, customer)
        await post_form(client, "/me", {"display_name": "Dana K. Scully"}, page="/me")
        stolen = client.cookies.get(SESSION_COOKIE)
        user_id = customer.id

        response = await post_form(client, "/me/delete", {"confirm_email": " Dana@Acme.example "}, page="/me")

        assert response.status_code == 200
        assert "Your account is deleted" in response.text
        assert "dana@acme.example" not in response.text.lower() and "Dana" not in response.text
        assert 'href="/login?next=/me/delete"' in response.text  # the header shows a signed-out visitor
        assert f"{SESSION_COOKIE}=" in response.headers["set-cookie"]  # the cookie is removed

        row = session.get(User, user_id)
        assert row is not None
        session.refresh(row)
        assert row.email.startswith("deleted-") and row.email.endswith("@deleted.invalid")
        assert row.display_name == "Deleted user"
        assert row.password_hash is None and row.organisation_id is None
        assert row.deleted_at is not None and row.is_active is False
        assert _count(session, User, func.lower(User.email) == "dana@acme.example") == 0
        assert _count(session, Identity, Identity.user_id == user_id) == 0
        assert _count(session, UserSession, UserSession.user_id == user_id) == 0
        # The audit log keeps what happened, not who it was.
        events = session.scalars(select(AuditEvent)).all()
        assert events and not [e for e in events if "acme.example" in e.actor_label
                               or "Dana" in e.entity_label or "Dana" in json.dumps(e.changes)]
        assert any(e.action == "user.deleted" and e.actor_id == user_id for e in events)

        # Signed out, and the old session cookie is worthless.
        client.cookies.clear()
        client.cookies.set(SESSION_COOKIE, stolen)
        assert (await client.get("/me")).headers["location"] == "/login?next=/me"
        # "Sign in" on that page leads back to /me/delete, which is only a form's address.
        assert (await client.get("/me/delete")).headers["location"] == "/me"

    async def test_a_deleted_account_cannot_sign_in_again(self, client, session):
        customer = make_customer(session)
        add_identity(session, customer)
        sign_in(client, session, customer)
        await post_form(client, "/me/delete", {"confirm_email": customer.email}, page="/me")
        client.cookies.clear()

        assert (await _login(client, "dana@acme.example", PASSWORD)).status_code == 400
        # The same provider account starts a brand-new, empty account: the old row is never reused.
        again = accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
            kind=IdentityKind.oidc, issuer="https://id.acme.example", subject="acme-sub-4711",
            email="dana@acme.example", email_verified=True, name="Dana Scully"))
        assert again.id != customer.id and again.deleted_at is None

    async def test_the_last_admin_cannot_delete_their_account(self, client, session):
        admin = make_admin(session, email="root@vendor.example")
        make_admin(session, email="gone@vendor.example", is_active=False)  # a disabled admin does not count
        sign_in(client, session, admin)

        response = await post_form(client, "/me/delete", {"confirm_email": admin.email}, page="/me")

        assert response.status_code == 409
        assert "only admin" in response.text and "Make someone else an admin first" in response.text
        session.refresh(admin)
        assert admin.is_active and admin.deleted_at is None and admin.email == "root@vendor.example"
        assert (await client.get("/me")).status_code == 200  # still signed in

    async def test_an_admin_with_a_colleague_can_delete_theirs_and_leaves_the_staff_list(self, client, session):
        admin = make_admin(session, email="leaving@vendor.example")
        colleague = make_admin(session, email="staying@vendor.example")
        sign_in(client, session, admin)

        response = await post_form(client, "/me/delete", {"confirm_email": admin.email}, page="/me")

        assert response.status_code == 200
        assert [u.email for u in accounts.list_staff(session)] == [colleague.email]
