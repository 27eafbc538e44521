"""Classic stored-XSS payloads in comments come out inert on every page that shows them."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import pytest

from tests.discussion.helpers import comment
from tests.factories import make_item, make_pm, make_user
from tests.helpers.http import post_form, sign_in

PAYLOADS = [
    "<script>alert(1)</script>",
    "<SCRIPT SRC=//evil.example/x.js></SCRIPT>",
    "<img src=x onerror=alert(1)>",
    "<IMG SRC=\"javascript:alert('XSS');\">",
    "<svg onload=alert(1)>",
    "<svg><script>alert(1)</script></svg>",
    "<body onload=alert(1)>",
    "<iframe src=\"javascript:alert(1)\"></iframe>",
    "<object data=\"javascript:alert(1)\"></object>",
    "<a href=\"javascript:alert(1)\">click</a>",
    "<a href=\"&#x6A;avascript:alert(1)\">click</a>",
    "<div onmouseover=\"alert(1)\">hover</div>",
    "<details open ontoggle=alert(1)>",
    "<style>body{display:none}</style>",
    "<math><mtext><table><mglyph><style><img src=x onerror=alert(1)>",
    "<<script>script>alert(1)<</script>/script>",
    "[x](javascript:alert(1))",
    "[x](JaVaScRiPt:alert(1))",
    "[x](javascript&#58;alert(1))",
    "[x](&#106;avascript:alert(1))",
    "[x](java\tscript:alert(1))",
    "[x]( javascript:alert(1) )",
    "[x](vbscript:msgbox(1))",
    "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "![x](data:image/svg+xml;base64,PHN2ZyBvbmxvYWQ9YWxlcnQoMSk+)",
    "![x](javascript:alert(1))",
    "[x](https://example.com \"title\\\" onmouseover=\\\"alert(1)\")",
    "[x](\" onclick=\"alert(1))",
    "[ref]\n\n[ref]: javascript:alert(1)",
    "<javascript:alert(1)>",
    "[<img src=x onerror=alert(1)>](https://example.com)",
    "**<img src=x onerror=alert(1)>**",
    "`<script>alert(1)</script>`",
    "```html\n<script>alert(1)</script>\n```",
    "> <script>alert(1)</script>",
    "<a href=x onclick=alert(1)>*markdown inside*</a>",
    "<scr<script>ipt>alert(1)</script>",
    "\"><script>alert(1)</script>",
    "'><img src=x onerror=alert(1)>",
    "</textarea><script>alert(1)</script>",
    "</article></section><script>alert(1)</script>",
]

# Tags comment Markdown may produce (app/markup.py), plus the page's own markup around comments.
_ALLOWED_TAGS = {
    "a", "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li", "h1", "h2", "h3", "h4",
    "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del",
    "section", "article", "header", "span", "time", "div", "details", "summary", "form", "input", "button",
    "textarea", "label", "main", "nav", "caption", "fieldset", "legend",
}
_BAD_SCHEME = re.compile(r"^(javascript|vbscript|data|file):", re.IGNORECASE)


class _Audit(HTMLParser):
    """Collects everything in the markup that could run script."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _ALLOWED_TAGS:
            self.problems.append(f"<{tag}>")
        for name, value in attrs:
            if name.startswith("on") or name in {"style", "srcdoc", "formaction"}:
                self.problems.append(f"<{tag} {name}=>")
            if name in {"href", "src", "action", "xlink:href"} and value is not None:
                squeezed = re.sub(r"[\x00-\x20]+", "", value)
                if _BAD_SCHEME.match(squeezed):
                    self.problems.append(f"<{tag} {name}={value!r}>")
            if tag == "a" and name == "href" and value and value.startswith(("http:", "https:")):
                rel = dict(attrs).get("rel") or ""
                if "nofollow" not in rel or "ugc" not in rel:
                    self.problems.append(f"<a href={value!r}> without rel=nofollow ugc")


def assert_inert(html: str, where: str) -> None:
    assert not re.search(r"<\s*script", html, re.IGNORECASE), f"a <script> tag on {where}"
    audit = _Audit()
    audit.feed(html)
    audit.close()
    assert audit.problems == [], f"{where}: {audit.problems}"


def _between(html: str, start: str, end: str) -> str:
    i = html.index(start)
    return html[i:html.index(end, i)]


async def test_xss_payloads_are_inert_on_the_item_page_edit_report_and_moderation_pages(client, session):
    item, ann, bob, pm = make_item(session), make_user(session), make_user(session), make_pm(session)
    comments = [comment(session, item, ann, payload) for payload in PAYLOADS]

    sign_in(client, session, bob)
    page = await client.get(item.path)
    discussion_html = _between(page.text, '<section class="discussion"', '<aside class="timeline"')
    assert_inert(discussion_html, "the item page")
    assert discussion_html.count('<article class="comment') == len(PAYLOADS)  # nothing broke out or vanished
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in discussion_html  # shown as text, not dropped silently
    assert 'href="https://example.com" rel="nofollow ugc noopener"' in discussion_html

    for c in comments[:5]:
        report = await client.get(f"/comments/{c.public_id}/report")
        assert_inert(_between(report.text, "<main", "</main>"), "the report page")
        await post_form(client, f"/comments/{c.public_id}/report", {"reason": PAYLOADS[c.id % len(PAYLOADS)]},
                        page=item.path)

    sign_in(client, session, ann)
    edit = await client.get(f"/comments/{comments[0].public_id}/edit")
    assert_inert(_between(edit.text, "<main", "</main>"), "the edit page")

    sign_in(client, session, pm)
    staff_page = await client.get(item.path)
    assert_inert(_between(staff_page.text, '<section class="discussion"', '<aside class="timeline"'),
                 "the item page for staff")
    moderation = await client.get("/admin/moderation")
    assert_inert(_between(moderation.text, '<div class="admin-main">', "</main>"), "the moderation page")


async def test_xss_payloads_in_a_refused_comment_are_inert_when_the_form_comes_back(client, session):
    item, ann = make_item(session), make_user(session)
    sign_in(client, session, ann)
    payload = "</textarea><script>alert(1)</script><img src=x onerror=alert(1)>" + "x" * 5000
    refused = await post_form(client, f"/items/{item.public_id}/comments", {"body": payload}, page=item.path)
    assert refused.status_code == 422
    assert_inert(_between(refused.text, '<section class="discussion"', '<aside class="timeline"'), "the 422 page")
    assert "&lt;/textarea&gt;&lt;script&gt;" in refused.text


def test_the_checker_itself_catches_live_markup():
    for live in ("<img src=x onerror=alert(1)>", '<a href=" javascript:x">x</a>',
                 "<ScRiPt>x</script>", "<svg onload=x>", '<a href="https://e.example">x</a>',
                 '<img src="data:image/png;base64,AA">'):
        with pytest.raises(AssertionError):
            assert_inert(live, "a sample")
