"""Markdown keeps no image in any output: a comment's page and API `body_html`, an item's
`description_html`, the changelog and its feed show a link to the image, worded with its alt text."""

from __future__ import annotations

import re

import feedparser
import pytest

from app.markup import plain_text, render_markdown
from tests.factories import make_item, make_user
from tests.helpers.http import post_form, sign_in
from tests.roadmap.helpers import released

PIXEL = "![our dashboard](https://tracker.example/p.gif?who=ann \"Dashboard\")"
_IMG = re.compile(r"<\s*img\b", re.IGNORECASE)


def test_an_image_becomes_a_link_worded_with_its_alt_text():
    assert str(render_markdown(PIXEL)) == ('<p><a href="https://tracker.example/p.gif?who=ann" title="Dashboard" '
                                           'rel="nofollow ugc noopener">our dashboard</a></p>\n')
    assert str(render_markdown("![](https://e.example/a.png)")) == (
        '<p><a href="https://e.example/a.png" rel="nofollow ugc noopener">image</a></p>\n')


def test_an_image_inside_a_link_leaves_the_link_with_the_alt_text():
    html = str(render_markdown("[![Acme logo](https://e.example/logo.png)](https://acme.example)"))
    assert html == '<p><a href="https://acme.example" rel="nofollow ugc noopener">Acme logo</a></p>\n'


def test_no_image_survives_any_spelling():
    for text in ("![x](data:image/png;base64,AAAA)", "![a][ref]\n\n[ref]: https://e.example/i.png",
                 "<img src=https://e.example/i.png>", "* ![in a list](https://e.example/i.png)",
                 "| a |\n|---|\n| ![cell](https://e.example/i.png) |", "![alt <b>x</b>](https://e.example/i.png)"):
        html = str(render_markdown(text))
        assert not _IMG.search(html), (text, html)
        assert ' src="' not in html and "src=" not in html.replace("&lt;img src=", "")  # raw HTML stays text


async def test_a_comment_with_an_image_shows_a_link_on_the_page_and_in_the_api(client, session):
    item = make_item(session)
    sign_in(client, session, make_user(session))
    posted = await post_form(client, f"/items/{item.public_id}/comments", {"body": f"Look: {PIXEL}"}, page=item.path)
    assert posted.status_code == 303

    page = (await client.get(item.path)).text
    assert not _IMG.search(page.split('<section class="discussion"', 1)[1])
    assert 'title="Dashboard" rel="nofollow ugc noopener">our dashboard</a>' in page

    api = (await client.get(f"/api/v1/items/{item.public_id}/comments")).json()
    body_html = api["comments"][0]["body_html"]
    assert not _IMG.search(body_html) and ">our dashboard</a>" in body_html


async def test_descriptions_release_notes_and_the_feed_keep_no_image(client, session):
    item = released(session, "Dashboards", 4, description=f"Now with {PIXEL}", release_notes=f"Shipped: {PIXEL}")

    described = (await client.get(f"/api/v1/items/{item.public_id}")).json()
    assert not _IMG.search(described["description_html"]) and ">our dashboard</a>" in described["description_html"]
    assert not _IMG.search(described["release_notes_html"])

    changelog = (await client.get("/changelog")).text
    assert not _IMG.search(changelog) and ">our dashboard</a>" in changelog

    feed = await client.get("/changelog.atom")
    entry = feedparser.parse(feed.text).entries[0]
    assert entry.title == "Dashboards"
    assert not _IMG.search(entry.content[0].value) and ">our dashboard</a>" in entry.content[0].value
    assert "tracker.example/p.gif" in entry.content[0].value  # still reachable, as a link a reader chooses


@pytest.mark.parametrize(("markdown", "text"), [
    ("# Heading\n\nSome **bold**, _italic_ and `code`.", "Heading Some bold, italic and code."),
    # What reads as text stays as written (the walk-through's snippets read "rest period", "open :")
    ("A real-time (beta) feature! snake_case_names, 3 * 4 = 12, 2*3*4.",
     "A real-time (beta) feature! snake_case_names, 3 * 4 = 12, 2*3*4."),
    ("Open (9-17): the rest-period [draft]", "Open (9-17): the rest-period [draft]"),
    ("> quoted\n> more\n\n- one\n- two\n1. first\n2) second", "quoted more one two first second"),
    ('See [the docs](https://example.com/x "Title"), ![a chart](/c.png) and <https://example.com>.',
     "See the docs, a chart and https://example.com."),
    ("```python\nprint(1)\n```\nafter\n\n---\n\n~~gone~~ ***both***", "print(1) after gone both"),
    ("<script>alert(3)</script>", "<script>alert(3)</script>"),  # text: escaped wherever it is shown
])
def test_plain_text_drops_markdown_s_marks_and_keeps_what_reads_as_text(markdown, text):
    assert plain_text(markdown) == text
