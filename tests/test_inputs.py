"""Bad characters at the door (app/inputs.py): stripped from forms and query strings, refused in JSON
(422 naming the field), 404 in paths; integers from people are ASCII digits within a column's range."""

from __future__ import annotations

from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import select

from app.discussion.models import Comment
from app.feedback.models import Feedback
from app.inputs import _MultipartStream, _UrlencodedStream, clean_urlencoded
from app.parsing import INT32_MAX, clean_text, parse_int
from tests.admin.helpers import item_form
from tests.factories import make_admin, make_item, make_product, make_tag, make_user, stage
from tests.helpers.http import csrf_token, post_form, sign_in
from tests.roadmap.helpers import result_titles

# --- the pieces ---------------------------------------------------------------------------------------


def test_clean_text_keeps_what_people_type_and_drops_the_rest():
    assert clean_text("a\x00b\x01c\x1fd\x7f\te\nf\rg") == "abcd\x7f\te\nf\rg"
    assert clean_text("half \ud800 a pair, whole 😀") == "half  a pair, whole 😀"
    assert clean_text("a\u202eb\u202ac\u2066d\u2069e\u200ef") == "abcde\u200ef"  # bidi controls; a mark stays


def test_parse_int_takes_ascii_digits_within_range_only():
    assert [parse_int(v) for v in ("7", " 42 ", "+3", "0")] == [7, 42, 3, 0]
    assert [parse_int(v) for v in ("²", "١", "٣٤", "1_000", "0x10", "1e3", "", None, "-1", "1.0", True)] == [None] * 11
    assert parse_int(str(INT32_MAX)) == INT32_MAX and parse_int(str(INT32_MAX + 1)) is None
    assert parse_int("9" * 5000) is None  # never reaches int() (which refuses over 4300 digits)
    assert parse_int("-5", minimum=-10) == -5 and parse_int("11", maximum=10) is None


@pytest.mark.parametrize(("raw", "fields"), [
    (b"a=x%00y&b=%01%1F%1f%0b", [("a", "xy"), ("b", "")]),
    (b"a=keep%09%0A%0d&%00b=1", [("a", "keep\t\n\r"), ("b", "1")]),
    (b"a=%0%001", [("a", "%01")]),  # dropping %00 must not make a new %01
    (b"a=100%&b=%zz%", [("a", "100%"), ("b", "%zz%")]),
    (b"a=raw\x00nul\x07", [("a", "rawnul")]),
    (b"a=%C3%A9t%C3%A9+x", [("a", "été x")]),
    (b"a=evil%E2%80%AEtxt.exe&b=%e2%81%a6x%E2%81%A9%E2%80%8E", [("a", "eviltxt.exe"), ("b", "x\u200e")]),
    (b"a=%%E2%80%AE41", [("a", "%41")]),  # dropping one must not make a new escape
    (b"a=%E2%80%00%aa!&b=%E2%00%80%01%AE", [("a", "!"), ("b", "")]),  # nor a new bidi control (hypothesis found it)
])
def test_urlencoded_text_decodes_to_the_same_fields_without_controls(raw, fields):
    assert parse_qsl(clean_urlencoded(raw).decode("latin-1"), keep_blank_values=True) == fields


_FORMISH = st.lists(st.sampled_from([*"ab=&%+0139AaDdFf\x00\x01\t\n\r", "%00", "%0", "%1F", "%0a", "%E2%80%AE",
                                     "%e2%81%a6", "%E2%80", "%E2", "%80", "%81", "%aa", "%A6", "%AE"])).map("".join)


@given(text=_FORMISH, cuts=st.lists(st.integers(min_value=0, max_value=200), max_size=6))
@settings(max_examples=200, deadline=None)
def test_a_urlencoded_body_in_chunks_comes_out_as_it_would_whole(text, cuts):
    data = text.encode()
    stream, out, last = _UrlencodedStream(), b"", 0
    for cut in sorted({min(c, len(data)) for c in cuts}):
        out += stream.feed(data[last:cut], final=False)
        last = cut
    out += stream.feed(data[last:], final=True)
    assert out == clean_urlencoded(data)
    decoded = "".join(k + v for k, v in parse_qsl(out.decode("latin-1"), keep_blank_values=True))
    assert clean_text(decoded) == decoded


_BOUNDARY = b"----b0undary"
_MULTIPART = (b"--" + _BOUNDARY + b"\r\n"
              b'Content-Disposition: form-data; name="title"\r\n\r\n'
              b"Dark\x00 mode\x1b\tplease\xe2\x80\xae \xc3\xa9t\xc3\xa9\r\n"
              b"--" + _BOUNDARY + b"\r\n"
              b'Content-Disposition: form-data; name="logo"; filename="a\x00\xe2\x81\xa6.png"\r\n'
              b"Content-Type: image/png\r\n\r\n"
              b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xe2\x80\xae\r\n--not-the-boundary\x00\r\n"
              b"--" + _BOUNDARY + b"--\r\n")
_CLEANED = (b"--" + _BOUNDARY + b"\r\n"
            b'Content-Disposition: form-data; name="title"\r\n\r\n'
            b"Dark mode\tplease \xc3\xa9t\xc3\xa9\r\n"
            b"--" + _BOUNDARY + b"\r\n"
            b'Content-Disposition: form-data; name="logo"; filename="a.png"\r\n'
            b"Content-Type: image/png\r\n\r\n"
            b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xe2\x80\xae\r\n--not-the-boundary\x00\r\n"
            b"--" + _BOUNDARY + b"--\r\n")


def test_multipart_text_fields_and_headers_lose_controls_and_files_keep_every_byte():
    whole = _MultipartStream(_BOUNDARY).feed(_MULTIPART, final=True)
    assert whole == _CLEANED
    for size in (1, 2, 3, 7, 16, 17):  # every way a delimiter or a header end can straddle chunks
        stream = _MultipartStream(_BOUNDARY)
        chunks = [_MULTIPART[i:i + size] for i in range(0, len(_MULTIPART), size)]
        out = b"".join(stream.feed(c, final=False) for c in chunks) + stream.feed(b"", final=True)
        assert out == _CLEANED, size


def test_a_removed_control_never_joins_the_bytes_around_it_into_a_bidi_control_in_any_chunking():
    """`\xe2\x80` NUL `\xae` is U+202E once the NUL goes: what is left is cleaned again, across chunks too."""
    text = b"x\xe2\x00\x80\x01\xaey\xe2\x81\x00\x00\xa6z"
    body = (b"--" + _BOUNDARY + b'\r\nContent-Disposition: form-data; name="title"\r\n\r\n' + text + b"\r\n--"
            + _BOUNDARY + b"--\r\n")
    expected = body.replace(text, b"xyz")
    for size in range(1, 12):
        stream = _MultipartStream(_BOUNDARY)
        chunks = [body[i:i + size] for i in range(0, len(body), size)]
        out = b"".join(stream.feed(c, final=False) for c in chunks) + stream.feed(b"", final=True)
        assert out == expected, size
    urlencoded = b"a=x%E2%00%80%01%AEy%e2%81%00%00%a6z"
    for size in range(1, 12):
        stream, out = _UrlencodedStream(), b""
        for i in range(0, len(urlencoded), size):
            out += stream.feed(urlencoded[i:i + size], final=False)
        out += stream.feed(b"", final=True)
        assert parse_qsl(out.decode("latin-1")) == [("a", "xyz")], size


# --- through the app ------------------------------------------------------------------------------------


async def test_a_nul_in_a_comment_form_is_dropped_and_the_comment_saved(client, session):
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    response = await post_form(client, f"/items/{item.public_id}/comments",
                               {"body": "Works\x00 for\x0b us\x1b, thanks\r\nAnn"}, page=item.path)
    assert response.status_code == 303
    saved = session.scalar(select(Comment).where(Comment.item_id == item.id))
    assert saved is not None and saved.body == "Works for us, thanks\nAnn"


async def test_a_bidi_override_in_a_vote_reason_is_dropped_and_the_reason_saved(client, session):
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    response = await post_form(client, f"/items/{item.public_id}/vote",
                               {"importance": "important", "next": "/", "reason": "We need \u202eit\u2066 for payroll\u2069 \u05e9\u05dc\u05d5\u05dd"},
                               page=item.path)
    assert response.status_code == 303
    saved = session.scalar(select(Feedback).where(Feedback.item_id == item.id))
    assert saved is not None and saved.body == "We need it for payroll \u05e9\u05dc\u05d5\u05dd"  # Hebrew kept


async def test_a_nul_in_a_query_string_is_dropped(client, session):
    make_item(session, title="Dark mode")
    response = await client.get("/search", params={"q": "dark\x00 mode\x01"})
    assert response.status_code == 200
    assert result_titles(response.text) == ["Dark mode"] and "for “dark mode”" in response.text
    api = await client.get("/api/v1/items", params={"product": "no\x00such-product"})
    assert api.status_code == 200 and api.json()["total"] == 0  # the filter "nosuch-product", checked as such


async def test_a_multipart_form_in_a_charset_that_hides_controls_is_refused(client, session):
    admin = make_admin(session)
    sign_in(client, session, admin)
    token = await csrf_token(client, "/admin/settings")
    body = (b"--x\r\nContent-Disposition: form-data; name=\"csrf_token\"\r\n\r\n" + token.encode() +
            b"\r\n--x\r\nContent-Disposition: form-data; name=\"product_name\"\r\n\r\nA+AAA-B\r\n--x--\r\n")
    response = await client.post("/admin/settings", content=body,
                                 headers={"content-type": "multipart/form-data; boundary=x; charset=utf-7"})
    assert response.status_code == 415


async def _voter(client, session):  # type: ignore[no-untyped-def]
    sign_in(client, session, make_user(session, password=None))
    return {"X-CSRF-Token": await csrf_token(client, "/")}


@pytest.mark.parametrize("reason", [r"Audits\u0000 monthly", r"Audits \ud83d monthly", r"Bell\u0007"])
async def test_a_json_string_with_a_control_or_a_lone_surrogate_is_refused_naming_the_field(client, session, reason):
    item = make_item(session)
    headers = await _voter(client, session)
    body = '{"importance": "critical", "reason": "' + reason + '"}'  # JSON escapes: how such text arrives
    response = await client.post(f"/api/v1/items/{item.public_id}/vote", content=body.encode(),
                                 headers={**headers, "content-type": "application/json"})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid" and list(body["fields"]) == ["reason"]
    assert "control character" in body["detail"]
    assert session.scalar(select(Feedback).where(Feedback.item_id == item.id)) is None


async def test_a_json_key_with_a_nul_is_refused_too(client, session):
    item = make_item(session)
    headers = await _voter(client, session)
    response = await client.post(f"/api/v1/items/{item.public_id}/vote",
                                 headers={**headers, "content-type": "application/json"},
                                 content=b'{"importance": "critical", "re\\u0000ason": "x"}')
    assert response.status_code == 422 and list(response.json()["fields"]) == ["reason"]


async def test_json_that_only_has_tabs_and_newlines_is_taken(client, session):
    item = make_item(session)
    headers = await _voter(client, session)
    response = await client.post(f"/api/v1/items/{item.public_id}/vote", headers=headers,
                                 json={"importance": "critical", "reason": "Line one\n\tLine two 😀"})
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/items/%00", "/items/a%00b/slug", "/comments/%01", "/api/v1/items/%00",
                                  "/api/v1/items/%00/comments", "/login/email/%00", "/invitations/%1F",
                                  "/static/%00.css", "/auth/%00/start"])
async def test_a_path_with_a_control_character_is_not_found(client, session, path):
    response = await client.get(path)
    assert response.status_code == 404


@pytest.mark.parametrize("path", ["/admin/products/99999999999", "/admin/stages/2147483648",
                                  "/admin/organisations/99999999999999999999999", "/admin/feedback/99999999999",
                                  "/admin/segments/%00", "/admin/tags/²"])
async def test_an_id_no_column_can_hold_is_not_found(client, session, path):
    sign_in(client, session, make_admin(session))
    response = await client.get(path)
    assert response.status_code == 404
    posted = await post_form(client, path + "/delete", {}, page="/admin")
    assert posted.status_code in (404, 405)


# --- integers typed by hand: ASCII digits within range ---------------------------------------------------

_NOT_IDS = ["²", "١", "99999999999999999999999", "2147483648"]


@pytest.mark.parametrize("page", ["²", "١", "٣", "99999999999", "-1"])
async def test_an_item_page_number_that_is_not_ascii_digits_shows_the_first_page(client, session, page):
    item = make_item(session, title="Dark mode")
    response = await client.get(item.path, params={"page": page})
    assert response.status_code == 200 and "Dark mode" in response.text


@pytest.mark.parametrize("bad", _NOT_IDS)
async def test_admin_item_form_ids_that_are_not_ascii_digits_are_explained(client, session, bad):
    product = make_product(session)
    sign_in(client, session, make_admin(session))
    for field, message in (("product_id", "Choose a product."), ("stage_id", "Choose a stage.")):
        data = item_form(product, stage(session, "planned"), **{field: bad})
        response = await post_form(client, "/admin/items", {**data, "action": "save"}, page="/admin/items/new")
        assert response.status_code == 422 and message in response.text
    data = item_form(product, stage(session, "planned"), tags=[str(make_tag(session).id), bad])
    response = await post_form(client, "/admin/items", {**data, "action": "save"}, page="/admin/items/new")
    assert response.status_code == 422 and "One of the tags no longer exists" in response.text
    data = item_form(product, stage(session, "planned"), visibility="customers", segments=[bad])
    response = await post_form(client, "/admin/items", {**data, "action": "save"}, page="/admin/items/new")
    assert response.status_code == 422 and "One of the segments no longer exists" in response.text


@pytest.mark.parametrize("bad", _NOT_IDS)
async def test_organisation_and_people_ids_that_are_not_ascii_digits_are_explained(client, session, bad):
    bad = bad[:20]  # what the fields take
    sign_in(client, session, make_admin(session))
    response = await post_form(client, "/admin/organisations", {"name": "Acme", "domains": "", "revenue": "1",
                                                                "segment_id": bad}, page="/admin/organisations")
    assert response.status_code == 422 and "That segment no longer exists" in response.text
    listed = await client.get("/admin/people", params={"organisation": bad})
    assert listed.status_code == 200
    person = make_user(session)
    moved = await post_form(client, f"/admin/people/{person.id}/organisation", {"organisation_id": bad},
                            page="/admin/people")
    assert moved.status_code == 303
    assert "Choose an organisation" in (await client.get(moved.headers["location"])).text


async def test_an_oversized_organisation_id_gets_a_sentence_not_pydantics_words(client, session):
    sign_in(client, session, make_admin(session))
    person = make_user(session)
    moved = await post_form(client, f"/admin/people/{person.id}/organisation", {"organisation_id": "1" * 40},
                            page="/admin/people")
    assert moved.status_code == 303
    assert "Choose an organisation" in (await client.get(moved.headers["location"])).text
    huge = await post_form(client, f"/admin/people/{person.id}/organisation", {"organisation_id": "1" * 2500},
                           page="/admin/people")
    # Read by the form's model (no transport bound of its own): the same sentence whatever the length.
    assert huge.status_code == 303
    back = (await client.get(huge.headers["location"])).text
    assert "Choose an organisation to move them to." in back and "String should have" not in back


@pytest.mark.parametrize("page", ["1_0", "+2", "2.0", " 1", "1 ", "٢", "²", "0x1", "1e1"])
async def test_integer_query_parameters_take_ascii_digits_only(client, session, page):
    make_item(session)
    for path in ("/api/v1/items", "/"):
        response = await client.get(path, params={"page": page})
        assert response.status_code == 422, (path, page, response.status_code)
    assert (await client.get("/api/v1/items", params={"page": "1"})).json()["page"] == 1


async def test_a_page_number_too_large_says_so_not_that_it_is_not_digits(client, session):
    """A walk-through: page=99999999999999999999 (20 digits) was told "Give a whole number in the digits 0-9"."""
    for page, says in (("99999999999999999999", "10000"), ("9" * 41, "far too large")):
        response = await client.get("/api/v1/items", params={"page": page})
        assert response.status_code == 422 and says in response.text and "digits 0-9" not in response.text, page
