"""Portable prefix search over item titles, summaries and descriptions.

A word index (`search_terms`: item, word, field) is kept in the item's own transaction. A query
word matches every indexed word that starts with it through an index range scan
(`term >= 'plan' AND term < 'plan\\uffff'`), which behaves the same on SQLite and PostgreSQL and
needs no extension. Items must match every query word; title hits rank above summary and body hits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from markupsafe import Markup, escape
from sqlalchemy import delete, func, insert, select
from sqlalchemy.orm import Session, selectinload

from app.accounts.viewer import Viewer
from app.markup import plain_text
from app.roadmap.models import Item, SearchTerm

FIELD_TITLE, FIELD_SUMMARY, FIELD_BODY = 3, 2, 1
MAX_QUERY_WORDS = 6
_WORD = re.compile(r"\w+", re.UNICODE)


def fold(text: str) -> str:
    """Lower case without accents, so 'Résumé' is found by 'resume'."""
    decomposed = unicodedata.normalize("NFKD", text.lower())
    return "".join(ch for ch in decomposed if not unicodedata.combining(ch))


def words(text: str) -> list[str]:
    return [w[:64] for w in _WORD.findall(fold(text or ""))]


def index_item(session: Session, item: Item) -> None:
    """Rewrite the item's rows in the word index (call after the item's text changed and was flushed).

    Core statements on the table, not ORM bulk ones: no SearchTerm objects are ever loaded, and the ORM
    path cost about four times as much per item (measured with bench/search.py).
    """
    table = SearchTerm.__table__
    session.execute(delete(table).where(table.c.item_id == item.id))
    rows: dict[tuple[str, int], None] = {}
    for field, text in ((FIELD_TITLE, item.title), (FIELD_SUMMARY, item.summary), (FIELD_BODY, item.description)):
        for word in words(text):
            rows[(word, field)] = None
    if rows:
        session.execute(insert(table), [{"item_id": item.id, "term": t, "field": f} for (t, f) in rows])


def query_words(q: str) -> list[str]:
    seen: list[str] = []
    for word in words(q):
        if word not in seen:
            seen.append(word)
    return seen[:MAX_QUERY_WORDS]


@dataclass(frozen=True, slots=True)
class SearchHit:
    item: Item
    title_html: Markup
    snippet_html: Markup


def search_items(session: Session, viewer: Viewer, q: str, *, limit: int = 30) -> list[SearchHit]:
    from app.roadmap.service import visible_items

    prefixes = query_words(q)
    if not prefixes:
        return []
    # One score per (item, query word): the best field it matched in.
    per_word = []
    for n, prefix in enumerate(prefixes):
        per_word.append(
            select(SearchTerm.item_id.label("item_id"), func.max(SearchTerm.field).label("score"))
            .where(SearchTerm.term >= prefix, SearchTerm.term < prefix + "\uffff")
            .group_by(SearchTerm.item_id)
            .subquery(f"w{n}")
        )
    first = per_word[0]
    score = first.c.score
    stmt = visible_items(viewer)
    stmt = stmt.join(first, first.c.item_id == Item.id)
    for sub in per_word[1:]:
        stmt = stmt.join(sub, sub.c.item_id == Item.id)
        score = score + sub.c.score
    stmt = (
        stmt.options(selectinload(Item.stage), selectinload(Item.product))
        .order_by(score.desc(), Item.updated_at.desc(), Item.id.desc())
        .limit(limit)
    )
    return [
        SearchHit(item=item, title_html=highlight(item.title, prefixes),
                  snippet_html=highlight(snippet(item, prefixes), prefixes))
        for item in session.scalars(stmt)
    ]


def _fold_mapped(text: str) -> tuple[str, list[int] | None]:
    """`fold(text)` and, for each folded character, the index of the character it came from (None
    when they are the same: ASCII text, the common case).

    Folding can change lengths ("…" becomes "...", "ﬁ" becomes "fi", a decomposed accent vanishes), so
    positions found in the folded text must be mapped back before they cut the original.
    """
    if text.isascii():
        return text.lower(), None
    out: list[str] = []
    origin: list[int] = []
    for index, ch in enumerate(text):
        for folded in (ch.lower() if ch.isascii() else fold(ch)):
            out.append(folded)
            origin.append(index)
    return "".join(out), origin


def _match_spans(text: str, prefixes: list[str]) -> list[tuple[int, int]]:
    """Where words of `text` start with a query word, as sorted spans of the original text."""
    folded, origin = _fold_mapped(text)
    spans: list[tuple[int, int]] = []
    for prefix in prefixes:
        for m in re.finditer(r"(?<!\w)" + re.escape(prefix), folded):
            if origin is None:
                spans.append((m.start(), m.end()))
                continue
            start, end = origin[m.start()], origin[m.end() - 1] + 1
            while end < len(text) and unicodedata.combining(text[end]):
                end += 1  # keep a decomposed accent with its letter
            spans.append((start, end))
    return sorted(spans)


def snippet(item: Item, prefixes: list[str], width: int = 180) -> str:
    """The summary, or the part of the description around the first match."""
    text = plain_text(item.description, limit=5000)
    positions = [start for start, _ in _match_spans(text, prefixes)]
    if item.summary and (not positions or any(w.startswith(p) for p in prefixes for w in words(item.summary))):
        return item.summary
    if not positions:
        return plain_text(text, limit=width)
    start = max(0, min(positions) - width // 3)
    piece = text[start:start + width]
    if start > 0:
        piece = "…" + piece.split(" ", 1)[-1]
    if start + width < len(text):
        piece = piece.rsplit(" ", 1)[0] + "…"
    return piece


def highlight(text: str, prefixes: list[str]) -> Markup:
    """Escape the text and wrap word beginnings that match a query word in <mark>."""
    if not prefixes or not text:
        return escape(text)
    spans = _match_spans(text, prefixes)
    if not spans:
        return escape(text)
    out, pos = [], 0
    for start, end in spans:
        if start < pos:
            continue
        out.append(escape(text[pos:start]))
        out.append(Markup("<mark>") + escape(text[start:end]) + Markup("</mark>"))
        pos = end
    out.append(escape(text[pos:]))
    return Markup("").join(out)
