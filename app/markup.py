"""Markdown to sanitised HTML: markdown-it-py with raw HTML off, then nh3 as a second wall.

No image is ever embedded: `![alt](url)` becomes a link to the image with the alt text as its words. An
image from someone else's server, in a page, an API `body_html` or a feed, tells that server who read it
and when (a tracking pixel), and can change after moderation; the page's CSP would block it anyway, but
the API and the feed go to readers that have none."""

from __future__ import annotations

import re
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import nh3
from markdown_it import MarkdownIt
from markdown_it.common.utils import escapeHtml
from markdown_it.token import Token
from markupsafe import Markup

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")


def _image_as_link(renderer: Any, tokens: Sequence[Token], idx: int, options: Any, env: Any) -> str:
    token = tokens[idx]
    src = str(token.attrGet("src") or "")
    words = escapeHtml(renderer.renderInlineAsText(token.children or [], options, env).strip() or "image")
    inside_link = sum({"link_open": 1, "link_close": -1}.get(t.type, 0) for t in tokens[:idx]) > 0
    if inside_link:  # [![logo](a.png)](https://b): the outer link stays, with the alt text as its words
        return words
    title = token.attrGet("title")
    title_attr = f' title="{escapeHtml(str(title))}"' if title else ""
    return f'<a href="{escapeHtml(src)}"{title_attr}>{words}</a>'


_md.add_render_rule("image", _image_as_link)

_TAGS = {
    "a", "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "del",
}
_ATTRIBUTES = {"a": {"href", "title"}, "th": {"align"}, "td": {"align"}}


@lru_cache(maxsize=2048)
def render_markdown(text: str, *, base_url: str | None = None) -> Markup:
    """`base_url` (emails, which have no address of their own): a relative link such as `/items/…` is made
    absolute against it, so it leads to the portal and not nowhere."""
    html = _md.render(text or "")
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow ugc noopener",
        url_relative=("rewrite_with_base", base_url.rstrip("/") + "/") if base_url else None,
    )
    return Markup(clean)  # nosec B704 # nh3 has just sanitised it with an allow-list


# Markdown's marks, read off the text by pattern (markdown-it per text cost a search 3-15 ms for its 31 snippets): only
# where they are marks, so that "real-time", "(beta)", "Wow!" and snake_case stay as they were written.
_FENCE_LINE = re.compile(r"(?m)^[ \t]*(?:```|~~~).*$")
_RULE_LINE = re.compile(r"(?m)^[ \t]*([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_TABLE_RULE = re.compile(r"(?m)^[ \t]*\|?(?:[ \t]*:?-+:?[ \t]*\|)+[ \t]*(?::?-+:?)?[ \t]*$")
_LINE_MARKS = re.compile(r"(?m)^[ \t]*(?:(?:>[ \t]?)+|#{1,6}[ \t]+|[-*+][ \t]+|\d{1,9}[.)][ \t]+)+")
_LINK = re.compile(r"!?\[([^\]\n]*)\]\([^)\s]*(?:[ \t]+\"[^\"\n]*\")?\)")
_AUTOLINK = re.compile(r"<((?:https?|mailto):[^>\s]+)>")
_CODE = re.compile(r"(`+)([^`\n]+?)\1")
_EMPHASIS = re.compile(r"(?<![\w*~])(\*\*|__|\*|_|~~)(?=\S)(.+?)(?<=\S)\1(?![\w*~])")


def plain_text(text: str, limit: int = 300) -> str:
    """Markdown flattened to one line of text (for summaries, feeds, link previews and search snippets): headings,
    quotes, list bullets, emphasis, code marks, fences and rules gone, a link or image as its words."""
    flat = text or ""
    # Each pattern only where its mark is (a search flattens up to 31 descriptions per page)
    if "```" in flat or "~~~" in flat:
        flat = _FENCE_LINE.sub(" ", flat)
    if "--" in flat or "**" in flat or "__" in flat or "* *" in flat:
        flat = _TABLE_RULE.sub(" ", _RULE_LINE.sub(" ", flat))
    flat = _LINE_MARKS.sub("", flat)
    if "](" in flat:
        flat = _LINK.sub(r"\1", flat)
    if "<" in flat:
        flat = _AUTOLINK.sub(r"\1", flat)
    if "`" in flat:
        flat = _CODE.sub(r"\2", flat)
    if "*" in flat or "_" in flat or "~~" in flat:
        for _ in range(2):  # **_both_**
            flat = _EMPHASIS.sub(r"\2", flat)
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + "…"
