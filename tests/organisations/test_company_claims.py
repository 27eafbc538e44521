"""What a sign-in service says about a person and their company is cleaned and range-checked like the
admin forms: a NUL in a name or a revenue no column holds is dropped (the number with a warning in the
log), and the person is signed in all the same."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
from decimal import Decimal

import pytest
from sqlalchemy import select

from app.accounts import service as accounts
from app.accounts.models import Identity, IdentityKind, User
from app.organisations.models import Organisation, Segment
from tests.factories import make_user
from tests.helpers.sso import SECRET, claims, hs256, sso, sso_settings


@pytest.fixture
def settings(database_url):  # type: ignore[no-untyped-def]
    return sso_settings(database_url)


def signed(payload_json: str) -> str:
    """An HS256 token around JSON written by hand: escapes and numbers (Infinity, 1e15) that a JWT
    library would not produce, but a host app's library might."""
    def part(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    signing_input = part(b'{"alg":"HS256","typ":"JWT"}') + "." + part(payload_json.encode())
    signature = hmac.new(SECRET.encode(), signing_input.encode(), hashlib.sha256).digest()
    return signing_input + "." + part(signature)


def with_company(revenue_json: str, **company: str) -> str:
    base = claims()
    body = json.dumps({**base, "company": {"id": "acme-1", "name": "Acme", **company}})
    return body[:-2] + ', "revenue": ' + revenue_json + "}}"


def organisation(session) -> Organisation:  # type: ignore[no-untyped-def]
    found = session.scalar(select(Organisation).where(Organisation.external_id == "acme-1"))
    assert found is not None
    return found


@pytest.mark.parametrize("revenue", ["1e15", "1000000000000", "-5", "Infinity", "NaN", '"1e15"',
                                     "1" + "0" * 40, "true", '"lots"', "[1]", '{"v": 1}'])
async def test_a_revenue_out_of_range_or_not_a_number_is_ignored_and_the_person_signed_in(
        client, session, caplog, revenue):
    with caplog.at_level(logging.WARNING, logger="ahead"):
        response = await sso(client, signed(with_company(revenue)))
    assert response.status_code == 303
    user = session.scalar(select(User).where(User.email == "dana@bigco.example"))
    assert user is not None and user.organisation_id == organisation(session).id
    assert organisation(session).revenue == 0
    assert "company.revenue" in caplog.text and "ignored" in caplog.text


async def test_an_out_of_range_revenue_keeps_the_one_known_before(client, session):
    await sso(client, hs256(claims(company={"id": "acme-1", "name": "Acme", "revenue": 480000.5})))
    assert organisation(session).revenue == Decimal("480000.50")
    again = await sso(client, signed(with_company("1e15")))
    assert again.status_code == 303 and organisation(session).revenue == Decimal("480000.50")
    top = await sso(client, signed(with_company("999999999999.99")))
    assert top.status_code == 303 and organisation(session).revenue == Decimal("999999999999.99")


async def test_nul_controls_and_lone_surrogates_in_host_claims_are_dropped(client, session):
    payload = json.dumps({**claims(sub="host\u0000-42", name="Dana\u0000 Host\u0007"),
                          "company": {"id": "acme\u0000-1", "name": "Acme\u0000 Ltd",
                                      "segment": "Enter\u0000prise\u001b"}})
    payload = payload.replace("Host\\u0007", "Host\\ud800")  # a lone surrogate, as JSON carries one
    response = await sso(client, signed(payload))
    assert response.status_code == 303
    user = session.scalar(select(User).where(User.email == "dana@bigco.example"))
    assert user is not None and user.display_name == "Dana Host"
    identity = session.scalar(select(Identity).where(Identity.user_id == user.id))
    assert identity is not None and identity.subject == "host-42"
    org = organisation(session)
    assert org.name == "Acme Ltd" and user.organisation_id == org.id
    assert session.get(Segment, org.segment_id).name == "Enterprise"


def test_oidc_claims_are_cleaned_where_the_identity_is_signed_in(session):
    user = accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
        kind=IdentityKind.oidc, issuer="https://id.example\x00", subject="abc\x00\ud800", email="ann@example.com",
        email_verified=True, name="Ann\x00 Example", groups=("staff\x00",),
    ))
    session.flush()
    identity = session.scalar(select(Identity).where(Identity.user_id == user.id))
    assert (identity.issuer, identity.subject, user.display_name) == ("https://id.example", "abc", "Ann Example")
    assert identity.kind is IdentityKind.oidc


def test_cleaning_keeps_the_staff_mapping_of_oidc_groups(session):
    from app.portal import service as portal

    access = portal.Access(admin=portal.StaffRule(groups=("roadmap-admins",)))
    user = accounts.sign_in_identity(session, access=access, claims=accounts.IdentityClaims(
        kind=IdentityKind.oidc, issuer="https://id.example", subject="s-1", email="cy@example.com",
        email_verified=True, name="Cy", groups=("roadmap-\x00admins",)))
    assert user.role.value == "admin"


def test_an_existing_identity_is_found_by_its_cleaned_subject(session):
    person = make_user(session, email="bo@example.com", display_name="Bo")
    session.add(Identity(user_id=person.id, kind=IdentityKind.sso, issuer="sso", subject="bo-1"))
    session.flush()
    found = accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
        kind=IdentityKind.sso, issuer="sso", subject="bo-\x001", email="bo@example.com", email_verified=True))
    assert found.id == person.id
