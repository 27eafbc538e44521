"""Form models (app/forms.py and each domain's `FormModel`s): what a person reads when a form is refused.

Each form is posted over HTTP the way a browser posts it, with text that is too long, nothing where
something is needed, and a number that is not one; the page comes back with HTTP 422, the message next
to the field, and what was typed still in the form.
"""

from __future__ import annotations

import html
import re
from typing import Annotated, ClassVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from app.accounts import service as accounts
from app.accounts.models import Role
from app.accounts.viewer import Viewer
from app.discussion import service as discussion
from app.forms import FormModel, form_errors, text, whole_number
from tests.admin.helpers import branding_form, item_form
from tests.factories import PASSWORD, make_admin, make_item, make_pm, make_product, make_tag, make_user, stage
from tests.feedback.helpers import make_customer, make_idea, make_organisation, make_segment
from tests.helpers.http import post_form, sign_in


def shown(response, *messages: str) -> None:  # type: ignore[no-untyped-def]
    """The form came back refused, every message on it (as the field's message and in the summary)."""
    assert response.status_code == 422, response.text[:500]
    page = html.unescape(response.text)
    for message in messages:
        assert message in page, message


@pytest.fixture
def pm(client, session):  # type: ignore[no-untyped-def]
    user = make_pm(session, display_name="Pat Manager")
    sign_in(client, session, user)
    return user


class TestItemCreate:
    async def test_too_long_empty_and_not_a_number(self, client, session, pm):
        product = make_product(session, name="Reports")
        data = item_form(product, stage(session, "planned"), title="", summary="s" * 301,
                         description="d" * 20_001, product_id="1e3", stage_id="٣", tags=["x"])
        response = await post_form(client, "/admin/items", {**data, "action": "publish"}, page="/admin/items/new")
        shown(response, "A title is required.", "Keep it to 300 characters (it has 301).",
              "Keep it to 20,000 characters (it has 20,001).", "Choose a product.", "Choose a stage.",
              "One of the tags no longer exists; please choose again.")
        assert 'value="1e3"' not in response.text  # a select: the typed option is simply not chosen
        assert "d" * 20_001 in response.text

    async def test_a_choice_that_is_not_offered(self, client, session, pm):
        product = make_product(session)
        data = item_form(product, stage(session, "planned"), timeframe="someday", confidence="sure",
                         visibility="everyone")
        response = await post_form(client, "/admin/items", data, page="/admin/items/new")
        shown(response, "Choose Now, Next, Later or a quarter.", "Choose low, medium or high.",
              "Choose who can see the item.")

    async def test_a_text_error_and_a_missing_row_are_shown_together(self, client, session, pm):
        product = make_product(session)
        data = item_form(product, stage(session, "planned"), title="t" * 201, product_id="99999")
        response = await post_form(client, "/admin/items", data, page="/admin/items/new")
        shown(response, "Keep it to 200 characters (it has 201).", "Choose a product.")
        page = html.unescape(response.text)
        summary = page[page.index("Keep it to 200"):]
        assert "Choose a product." in summary  # in the order of the form's fields


class TestItemUpdate:
    async def test_too_long_empty_and_not_a_number(self, client, session, pm):
        product = make_product(session)
        item = make_item(session, title="Shift swaps", product=product)
        data = item_form(product, stage(session, "planned"), title="   ", summary="one\ntwo",
                         internal_notes="n" * 20_001, stage_id="-1", tags=["1.5"])
        response = await post_form(client, f"/admin/items/{item.public_id}", data,
                                   page=f"/admin/items/{item.public_id}")
        shown(response, "A title is required.", "The summary is one line.",
              "Keep it to 20,000 characters (it has 20,001).", "Choose a stage.",
              "One of the tags no longer exists; please choose again.")
        session.refresh(item)
        assert item.title == "Shift swaps"


class TestIdeaCreate:
    async def test_too_long_empty_and_not_a_number(self, client, session):
        sign_in(client, session, make_user(session))
        response = await post_form(client, "/ideas", {"title": " ", "body": "b" * 5001, "product_id": "12abc"},
                                   page="/ideas/new")
        shown(response, "Give your idea a short title.", "Keep it to 5,000 characters (it has 5,001).",
              "That product no longer exists; please choose again.")
        assert "b" * 5001 in response.text

    async def test_too_long_title_and_a_product_that_is_gone(self, client, session):
        sign_in(client, session, make_user(session))
        response = await post_form(client, "/ideas", {"title": "t" * 201, "product_id": "99999"}, page="/ideas/new")
        shown(response, "Keep it to 200 characters (it has 201).", "That product no longer exists; please choose again.")


class TestFeedbackDecline:
    async def test_empty_and_too_long(self, client, session, pm):
        idea = make_idea(session, make_customer(session))
        page = f"/admin/feedback/{idea.id}"
        empty = await post_form(client, f"{page}/decline", {"decline_reason": "  \n "}, page=page)
        shown(empty, "Say why, in a sentence or two: the author reads it.")
        long = await post_form(client, f"{page}/decline", {"decline_reason": "r" * 2001}, page=page)
        shown(long, "Keep it to 2,000 characters (it has 2,001).")
        assert "r" * 2001 in long.text


class TestVoteCapture:
    async def test_not_a_number_empty_and_too_long(self, client, session, pm):
        item = make_item(session)
        page = f"/admin/items/{item.public_id}/capture"
        response = await post_form(client, page, {
            "customer": "contact", "contact_name": "", "contact_email": "not-an-address", "organisation_id": "x",
            "importance": "２", "source": "fax", "source_url": "https://crm.example/" + "u" * 500,
            "note": "n" * 5001,
        }, page=page)
        shown(response, "Enter the contact's name.", "Enter a valid email address, like name@example.com.",
              "Choose the contact's organisation.",
              "Choose how much it matters: nice to have, important or critical.",
              "Choose where this came from: a call, a ticket, a meeting or an email.",
              "Keep it to 500 characters (it has 520).", "Keep it to 5,000 characters (it has 5,001).")
        assert 'value="not-an-address"' in response.text

    async def test_no_customer_chosen(self, client, session, pm):
        item = make_item(session)
        page = f"/admin/items/{item.public_id}/capture"
        response = await post_form(client, page, {"customer": "", "importance": "2", "source": "call",
                                                  "source_url": "ftp://files.example/x"}, page=page)
        shown(response, "Choose a customer from the search, or a new contact.",
              "Enter a web address starting with https:// (or leave it empty).")


class TestProfileUpdate:
    async def test_empty_and_too_long(self, client, session):
        sign_in(client, session, make_user(session, display_name="Dana"))
        shown(await post_form(client, "/me", {"display_name": "\t "}, page="/me"), "Enter your name.")
        long = await post_form(client, "/me", {"display_name": "n" * 121}, page="/me")
        shown(long, "Keep it to 120 characters (it has 121).")
        assert "n" * 121 in long.text


class TestAccountDelete:
    async def test_empty_and_too_long(self, client, session):
        user = make_user(session)
        sign_in(client, session, user)
        shown(await post_form(client, "/me/delete", {"confirm_email": ""}, page="/me"),
              "Type your email address exactly as shown to confirm.")
        shown(await post_form(client, "/me/delete", {"confirm_email": "a" * 321}, page="/me"),
              "Keep it to 320 characters (it has 321).")
        session.refresh(user)
        assert user.deleted_at is None


class TestComments:
    """The comment forms (app/discussion/service.py's CommentCreate, CommentEdit, CommentReportCreate)."""

    async def test_a_comment_empty_and_too_long(self, client, session):
        item = make_item(session)
        sign_in(client, session, make_user(session))
        page, url = item.path, f"/items/{item.public_id}/comments"
        shown(await post_form(client, url, {"body": " \r\n "}, page=page),
              "Write something before posting your comment.")
        # A browser's CR LF line breaks count as one character each, as they are stored.
        fits = await post_form(client, url, {"body": "a\r\n" * 2500}, page=page)
        assert fits.status_code == 303
        long = await post_form(client, url, {"body": "c" * 5001}, page=page)
        shown(long, "A comment can be at most 5,000 characters; this one has 5,001. Please shorten it.")
        assert "c" * 5001 in long.text

    async def test_an_edit_empty_and_too_long(self, client, session):
        author = make_user(session)
        mine = discussion.create_comment(session, viewer=Viewer(user=author), item=make_item(session), body="Frist")
        sign_in(client, session, author)
        url = f"/comments/{mine.public_id}/edit"
        shown(await post_form(client, url, {"body": ""}, page=url), "Write something before posting your comment.")
        long = await post_form(client, url, {"body": "e" * 5002}, page=url)
        shown(long, "A comment can be at most 5,000 characters; this one has 5,002. Please shorten it.")
        assert "e" * 5002 in long.text
        session.refresh(mine)
        assert mine.body == "Frist"

    async def test_a_report_with_a_reason_too_long(self, client, session):
        theirs = discussion.create_comment(session, viewer=Viewer(user=make_user(session)), item=make_item(session),
                                           body="Buy cheap watches")
        sign_in(client, session, make_user(session))
        url = f"/comments/{theirs.public_id}/report"
        long = await post_form(client, url, {"reason": "z  " * 250 + "z"}, page=url)
        shown(long, "A reason can be at most 500 characters; this one has 501.")  # runs of spaces count as one
        assert "z  " * 250 in long.text
        assert (await post_form(client, url, {"reason": "z " * 250}, page=url)).status_code == 303


class TestVoteSubmit:
    """The vote form (app/voting/commands.py's VoteSubmit): refused after the item's checks, every field at once."""

    async def test_a_choice_not_offered_and_a_reason_too_long(self, client, session):
        item = make_item(session)
        sign_in(client, session, make_user(session))
        data = {"importance": "urgent", "reason": "r" * 2001, "widget": "page", "next": item.path}
        response = await post_form(client, f"/items/{item.public_id}/vote", data, page=item.path)
        shown(response, "Choose how much it matters to you: nice to have, important or critical.",
              "Keep it to 2,000 characters (it has 2,001).")
        assert "r" * 2001 in response.text
        empty = await post_form(client, f"/items/{item.public_id}/vote", {"importance": " "}, page=item.path)
        shown(empty, "Choose how much it matters to you: nice to have, important or critical.")
        session.refresh(item)
        assert item.vote_count == 0


class TestMagicLinkRequest:
    """Asking for a sign-in link (app/accounts/service.py's MagicLinkRequest)."""

    async def test_empty_and_not_an_address(self, client):
        for typed in ("", "not-an-address", "two@at@example.com"):
            response = await post_form(client, "/login/email", {"link_email": typed, "next": "/roadmap"}, page="/login")
            shown(response, "Enter a valid email address, like name@example.com.")
            assert f'value="{typed}"' in response.text


class TestNewPasswords:
    """A new password typed twice (app/accounts/service.py's PasswordChange and InvitationAccept): its strength
    and a difference are shown at once, and the passwords are never sent back in the page."""

    async def test_invitation_too_short_and_different(self, client, session):
        invitation, token = accounts.invite_staff(session, email="new-pm@example.com", role=Role.pm,
                                                  invited_by=make_admin(session))
        url = f"/invitations/{token}"
        response = await post_form(client, url, {"display_name": "Robin", "password": "secret12",
                                                 "confirm_password": "secret13"}, page=url)
        shown(response, "Use at least 10 characters.", "The two passwords differ.")
        assert 'value="Robin"' in response.text and "secret12" not in response.text
        empty = await post_form(client, url, {"display_name": "Robin"}, page=url)
        shown(empty, "Use at least 10 characters.")
        assert "The two passwords differ." not in empty.text
        session.refresh(invitation)
        assert invitation.accepted_at is None

    async def test_a_new_password_too_long(self, client, session):
        sign_in(client, session, make_user(session, password=PASSWORD))
        long = "p" * 1025
        response = await post_form(client, "/account/password", {"current_password": PASSWORD, "new_password": long,
                                                                 "confirm_password": long}, page="/account/password")
        shown(response, "That password is too long (1024 characters at most).")
        assert long not in response.text


class TestPasswordSignIn:
    def test_the_address_is_normalised_and_the_password_taken_as_typed(self) -> None:
        data = accounts.PasswordSignIn.model_validate({"email": " Ann@Example.COM ", "password": " pass word ",
                                                       "next": "/roadmap"})
        assert (data.email, data.password, data.next) == ("ann@example.com", " pass word ", "/roadmap")


class TestTaxonomy:
    """ProductCreate/Update, StageCreate/Update, TagCreate/Update."""

    async def test_products(self, client, session, pm):
        new = await post_form(client, "/admin/products", {"name": " ", "description": "d" * 2001},
                              page="/admin/products")
        shown(new, "A name is required.", "Keep it to 2,000 characters (it has 2,001).")
        assert "d" * 2001 in new.text
        product = make_product(session, name="Reports")
        edit = await post_form(client, f"/admin/products/{product.id}", {"name": "n" * 81},
                               page=f"/admin/products/{product.id}")
        shown(edit, "Keep it to 80 characters (it has 81).")
        session.refresh(product)
        assert product.name == "Reports"

    async def test_stages(self, client, session, pm):
        new = await post_form(client, "/admin/stages", {"name": "", "is_closed": "1"}, page="/admin/stages")
        shown(new, "A name is required.")
        assert re.search(r'name="is_closed" value="1"[^>]*checked', new.text)  # the tick is kept
        planned = stage(session, "planned")
        edit = await post_form(client, f"/admin/stages/{planned.id}", {"name": "s" * 61, "on_board": "1"},
                               page=f"/admin/stages/{planned.id}")
        shown(edit, "Keep it to 60 characters (it has 61).")

    async def test_tags(self, client, session, pm):
        shown(await post_form(client, "/admin/tags", {"name": "t" * 61}, page="/admin/tags"),
              "Keep it to 60 characters (it has 61).")
        tag = make_tag(session, "Mobile")
        make_tag(session, "Desktop")
        shown(await post_form(client, f"/admin/tags/{tag.id}", {"name": "\t"}, page=f"/admin/tags/{tag.id}"),
              "A name is required.")
        shown(await post_form(client, f"/admin/tags/{tag.id}", {"name": " desktop "}, page=f"/admin/tags/{tag.id}"),
              "There is already a tag called “desktop”.")


class TestCustomers:
    """OrganisationCreate/Update and SegmentCreate/Update."""

    async def test_organisations(self, client, session, pm):
        new = await post_form(client, "/admin/organisations", {
            "name": "", "domains": "acme.example\nnot a domain!", "segment_id": "x", "revenue": "lots"},
            page="/admin/organisations")
        shown(new, "A name is required.", "Not an email domain: “not”, “a”, “domain!”.",
              "That segment no longer exists; please choose again.",
              "Enter the yearly revenue as a number, like 48000.")
        assert "not a domain!" in html.unescape(new.text)
        acme = make_organisation(session, "Acme Logistics")
        make_organisation(session, "Globex")
        edit = await post_form(client, f"/admin/organisations/{acme.id}", {
            "name": "  globex ", "revenue": "-5"}, page=f"/admin/organisations/{acme.id}")
        shown(edit, "There is already an organisation called “globex”.", "Revenue cannot be negative (0 if unknown).")
        long = await post_form(client, f"/admin/organisations/{acme.id}", {"name": "n" * 121},
                               page=f"/admin/organisations/{acme.id}")
        shown(long, "Keep it to 120 characters (it has 121).")

    async def test_segments(self, client, session, pm):
        new = await post_form(client, "/admin/segments", {"name": " ", "weight": "abc"}, page="/admin/segments")
        shown(new, "A name is required.", "Enter the weight as a number, like 1 or 2.5.")
        enterprise = make_segment(session, "Enterprise")
        make_segment(session, "Mid-market")
        edit = await post_form(client, f"/admin/segments/{enterprise.id}", {"name": "mid-market", "weight": "1.2345"},
                               page=f"/admin/segments/{enterprise.id}")
        shown(edit, "There is already a segment called “mid-market”.", "Use at most three decimals.")
        long = await post_form(client, f"/admin/segments/{enterprise.id}", {"name": "s" * 81, "weight": "2"},
                               page=f"/admin/segments/{enterprise.id}")
        shown(long, "Keep it to 80 characters (it has 81).")


class TestAdminAreas:
    """BrandingUpdate, AccessUpdate, StaffInvite and StaffRoleChange (admins only)."""

    @pytest.fixture
    def admin(self, client, session):  # type: ignore[no-untyped-def]
        user = make_admin(session, display_name="Sam Admin")
        sign_in(client, session, user)
        return user

    async def test_branding(self, client, session, admin):
        response = await post_form(client, "/admin/settings", branding_form(
            portal_name=" ", product_name="p" * 61, product_url="www.acme.example", accent_color="#12345"),
            page="/admin/settings")
        shown(response, "Give the portal a name.", "Keep it to 60 characters (it has 61).",
              "Use a full address starting with https://.", "Use a colour like #4f46e5.")
        assert 'value="www.acme.example"' in response.text and 'value="#12345"' in response.text
        long = await post_form(client, "/admin/settings", branding_form(portal_name="n" * 61), page="/admin/settings")
        shown(long, "Keep it to 60 characters (it has 61).")

    async def test_access(self, client, session, admin):
        response = await post_form(client, "/admin/access", {
            "private_mode": "1", "groups_claim": "my groups", "admin_emails": "dana@acme.example\nnot-an-address",
            "pm_domains": "acme.example, bad!", "pm_groups": "g" * 201}, page="/admin/access")
        shown(response, "Use the claim's name as the provider sends it, without spaces (e.g. groups).",
              "“not-an-address” is not an email address. Write one address per line.",
              "Not an email domain: “bad!”.", "Keep each group value to 200 characters.")
        assert "dana@acme.example\nnot-an-address" in html.unescape(response.text)
        assert re.search(r'name="private_mode" value="1" checked', response.text)
        long = await post_form(client, "/admin/access", {"groups_claim": "c" * 301}, page="/admin/access")
        shown(long, "Keep it to 300 characters (it has 301).")

    async def test_invitation(self, client, session, admin):
        response = await post_form(client, "/admin/staff/invitations", {"email": "", "role": "customer"},
                                   page="/admin/staff")
        shown(response, "Enter a valid email address, like name@example.com.", "Choose product manager or admin.")
        long = await post_form(client, "/admin/staff/invitations", {"email": "a" * 321, "role": "pm"},
                               page="/admin/staff")
        shown(long, "Keep it to 320 characters (it has 321).")

    async def test_role_change(self, client, session, admin):
        pm = make_pm(session)
        response = await post_form(client, f"/admin/staff/{pm.id}/role", {"role": "owner"}, page="/admin/staff")
        shown(response, "Choose product manager or admin.")
        session.refresh(pm)
        assert pm.role.value == "pm"


class TestTranslation:
    """The one translation from a model's refusals to messages, for refusals no rule words."""

    class Example(FormModel):
        messages: ClassVar[dict[str, str]] = {"count": "Give how many, in digits."}

        name: Annotated[str, text(10, required="Name it.")] = ""
        count: int = 0
        size: Annotated[int | None, whole_number("Give a size in digits.", required=False)] = None

    def test_a_rules_message_the_models_own_and_a_plain_one(self) -> None:
        with pytest.raises(ValidationError) as refused:
            self.Example.model_validate({"name": 5, "count": "many", "size": "big"})
        assert form_errors(self.Example, refused.value) == {
            "name": "Send this as text.", "count": "Give how many, in digits.", "size": "Give a size in digits."}


# --- reading a urlencoded body ---------------------------------------------------------------------------------

_BODY_PIECES = st.sampled_from([b"a", b"b", b"=", b"&", b"+", b"%", b"%2", b"%26", b"%3D", b"%E2%80", b"\xc3\xa9",
                                b";", b" ", b"\xff", b"%zz", b"%00", b"importance", b"reason"])


@given(st.lists(_BODY_PIECES, max_size=14).map(b"".join), st.integers(min_value=1, max_value=7))
@settings(max_examples=2000, deadline=None)
def test_a_urlencoded_body_gives_the_pairs_starlettes_parser_gives(body, chunk):
    """app.forms.parse_urlencoded stands in for Starlette's FormParser (python-multipart's parser, byte by byte):
    every pair the same, whatever the body and however it arrived in chunks."""
    import asyncio

    from starlette.datastructures import Headers
    from starlette.formparsers import FormParser

    from app.forms import parse_urlencoded

    async def stream():  # type: ignore[no-untyped-def]
        for start in range(0, len(body), chunk):
            yield body[start:start + chunk]

    async def starlettes() -> list[tuple[str, object]]:
        parser = FormParser(Headers({"content-type": "application/x-www-form-urlencoded"}), stream())
        return list((await parser.parse()).multi_items())

    assert parse_urlencoded(body) == asyncio.run(starlettes())


@pytest.mark.parametrize("token_in", ["body", "header"])
async def test_a_vote_form_is_read_the_same_whoever_read_its_body_first(client, session, token_in):
    """The CSRF token in the body (verify_csrf reads the form first, with Starlette's parser) or in the header (the
    form is read once, by read_form): the same fields either way, the last of a repeated one counting."""
    from tests.helpers.http import csrf_token
    from tests.voting.helpers import widget_text

    item = make_item(session, title="Shift swaps")
    sign_in(client, session, make_user(session, password=None))
    token = await csrf_token(client, "/")
    body = "importance=important&importance=critical&next=%2F&widget=card"
    headers = {"content-type": "application/x-www-form-urlencoded"}
    if token_in == "body":
        body += f"&csrf_token={token}"
    else:
        headers["x-csrf-token"] = token
    response = await client.post(f"/items/{item.public_id}/vote", content=body.encode(), headers=headers)
    assert response.status_code == 303, response.text[:300]
    assert widget_text((await client.get("/")).text, item.public_id).startswith("▲ 1 You voted: Critical")
