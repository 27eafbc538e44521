"""Markdown to sanitised HTML: markdown-it-py with raw HTML off, then nh3 as a second wall."""

from __future__ import annotations

from functools import lru_cache

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")

_TAGS = {
    "a", "p", "br", "hr", "strong", "em", "code", "pre", "blockquote", "ul", "ol", "li",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "img", "del",
}
_ATTRIBUTES = {"a": {"href", "title"}, "img": {"src", "alt", "title"}, "th": {"align"}, "td": {"align"}}


@lru_cache(maxsize=2048)
def render_markdown(text: str) -> Markup:
    html = _md.render(text or "")
    clean = nh3.clean(
        html,
        tags=_TAGS,
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        link_rel="nofollow ugc noopener",
    )
    return Markup(clean)  # nosec B704 # nh3 has just sanitised it with an allow-list


def plain_text(text: str, limit: int = 300) -> str:
    """Markdown flattened to one line of text (for summaries, feeds and search snippets)."""
    import re

    flat = re.sub(r"[`*_>#\[\]()!~|-]+", " ", text or "")
    flat = " ".join(flat.split())
    return flat if len(flat) <= limit else flat[: limit - 1].rsplit(" ", 1)[0] + "…"
