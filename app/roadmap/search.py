"""Prefix search over item titles, summaries and descriptions, on each database's own full-text engine.

One index row per item, written in the item's own transaction by `index_item` and created by the
migration `2026-11-25-1931_full_text_search` (not by the ORM metadata: neither structure is an ordinary
table — see `INDEX_TABLES`):

* SQLite: an FTS5 table `item_search` (rowid = item id; columns title, summary, body) with a prefix
  index for 2-4 characters. A query is every word as a quoted prefix term, ANDed (`"slack"* AND
  "integ"*`; a one-character word is a whole word, `"a"`: see `is_prefix`), ranked by bm25 with weights title 10, summary 4, body 1.
* PostgreSQL: a table `item_search` (item_id; document, a tsvector of all three fields weighted A, B
  and C; heading, its title and summary part) with a GIN index on each tsvector. A query is the words as
  prefix lexemes, ANDed (`'slack':* & 'integ':*`), ranked by ts_rank_cd with weights title (A) 1.0,
  summary (B) 0.4, body (C) 0.1.

On both, hits come in tiers — every word in the title, then in the title or summary, then anywhere —
and each tier is ranked on its own, so the costly ranking of thousands of descriptions that mention a
common prefix is rarely needed (see `search_items`).

Both engines get the same tokens, made here: `words()` folds case and accents in Python (so no
`unaccent` extension is needed) and splits on `\\w+`, exactly as the query and the highlighter do, so
what is found and what is marked agree on both databases. PostgreSQL never parses the text itself: the
tsvector and tsquery are built as literals from those words (`to_tsvector` would split `e-mail` or
`example.com` its own way). Each field holds its distinct words once, in order, as the earlier word index
did: an item does not outrank a title match by repeating a word throughout its description.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum
from functools import cache, lru_cache
from typing import Any

from markupsafe import Markup, escape
from sqlalchemy import (
    Integer,
    Select,
    Text,
    bindparam,
    cast,
    column,
    false,
    func,
    literal,
    literal_column,
    not_,
    select,
    table,
    text,
    true,
    union_all,
)
from sqlalchemy.dialects.postgresql import TSQUERY, TSVECTOR
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.orm import Session, joinedload
from sqlalchemy.sql.expression import ColumnClause

from app.accounts.viewer import Viewer
from app.db import DriverSql
from app.markup import plain_text
from app.roadmap.models import Item, Product, Stage, item_path
from app.roadmap.timeframes import Timeframe, timeframe_label
from app.roadmap.visibility import audience, visible_items

MAX_QUERY_WORDS = 6
MIN_PREFIX = 2  # a shorter query word matches only itself (`is_prefix`)
_WORD = re.compile(r"\w+", re.UNICODE)

# The tables the migration makes for the index (FTS5 keeps its data in the `_…` shadow tables). They
# are not in the ORM metadata, so Alembic's comparisons (autogenerate, tests/test_migrations.py) skip them.
INDEX_TABLES = frozenset({"item_search", "item_search_data", "item_search_idx", "item_search_content",
                          "item_search_docsize", "item_search_config"})

_fts = table("item_search", column("rowid", Integer), column("title"), column("summary"), column("body"))
_pg = table("item_search", column("item_id", Integer), column("document", TSVECTOR), column("heading", TSVECTOR))
# ts_rank_cd's weights are listed {D, C, B, A}: body is C, summary B, title A.
_PG_WEIGHTS: ColumnClause[Any] = literal_column("'{0.1, 0.1, 0.4, 1.0}'::float4[]")
_PG_MAX_POSITION = 16383  # tsvector positions stop there


def fold(text: str) -> str:
    """Case folded without accents, so 'Résumé' is found by 'resume' and 'Straße' by 'strasse' (Unicode's case
    folding, not lower case: 'ß' is 'ss', as a German reader types it). The index holds words folded so: changing
    this means indexing every item again (migrations/versions/2026-12-05-2110_search_case_folding.py did)."""
    if text.isascii():
        return text.lower()  # nothing to decompose: the common case, without a pass per character
    # The combining marks removed by one `translate` (C), not a generator per character (a search's hits folded
    # their text this way: a quarter of a never-repeated search's CPU with the spans below)
    if len(_UNCOMBINED) > _MAX_UNCOMBINED:
        _UNCOMBINED.clear()
    return unicodedata.normalize("NFKD", text.casefold()).translate(_UNCOMBINED)


class _Uncombined(dict[int, int | None]):
    """A `str.translate` table that drops combining characters and keeps every other, filled as characters are met."""

    def __missing__(self, code: int) -> int | None:
        kept = None if unicodedata.combining(chr(code)) else code
        self[code] = kept
        return kept


_UNCOMBINED = _Uncombined()
_MAX_UNCOMBINED = 50_000  # distinct characters remembered (anyone may search for any); then it starts again


def words(text: str) -> list[str]:
    return [w[:64] for w in _WORD.findall(fold(text or ""))]


def field_words(text: str) -> list[str]:
    """A field's distinct words in order of first appearance: what the index holds for it."""
    return list(dict.fromkeys(words(text)))


# --- writing the index -----------------------------------------------------------------------------------

_SQLITE_DELETE = text("DELETE FROM item_search WHERE rowid = :item_id")
_SQLITE_INSERT = text("INSERT INTO item_search (rowid, title, summary, body) VALUES (:item_id, :title, :summary, :body)")
_PG_UPSERT = text(
    "INSERT INTO item_search (item_id, document, heading) "
    "VALUES (:item_id, CAST(:document AS tsvector), ts_filter(CAST(:document AS tsvector), '{a,b}')) "
    "ON CONFLICT (item_id) DO UPDATE SET document = excluded.document, heading = excluded.heading"
)


def index_item(session: Session, item: Item) -> None:
    """Write the item's entry in the search index, replacing the old one (call after its text changed
    and it was flushed, in the same transaction)."""
    index_texts(session.connection(), [(item.id, item.title, item.summary, item.description)])


def index_texts(connection: Connection, rows: Iterable[tuple[int, str, str, str]], *, batch: int = 1000) -> int:
    """Index many items at once — (item id, title, summary, description) rows, each replacing the item's
    entry — in the connection's transaction, with executemany. Returns how many rows were written."""
    sqlite = connection.dialect.name == "sqlite"
    written, chunk = 0, []
    for item_id, title, summary, description in rows:
        if sqlite:
            chunk.append({"item_id": item_id, "title": " ".join(field_words(title)),
                          "summary": " ".join(field_words(summary)), "body": " ".join(field_words(description))})
        else:
            chunk.append({"item_id": item_id, "document": tsvector(title, summary, description)})
        if len(chunk) >= batch:
            written += _write(connection, chunk, sqlite=sqlite)
            chunk = []
    if chunk:
        written += _write(connection, chunk, sqlite=sqlite)
    return written


def index_next(connection: Connection, *, after_id: int = 0, limit: int = 500) -> tuple[int, int] | None:
    """Index again the next `limit` items after `after_id` (by id), from their title, summary and description as
    they are, in the connection's transaction: (how many, the last id), or None when none was left. `ahead reindex`
    calls it batch by batch, after text was changed with SQL by hand, which the index does not follow. The rows are
    read FOR SHARE (PostgreSQL; SQLite's writer holds the whole database): an edit of one of them meanwhile waits for
    this batch and writes its own entry after it, never under the text read here."""
    rows = connection.execute(select(Item.id, Item.title, Item.summary, Item.description)
                              .where(Item.id > after_id).order_by(Item.id).limit(limit)
                              .with_for_update(read=True)).all()
    if not rows:
        return None
    return index_texts(connection, rows), rows[-1][0]


def drop_missing(connection: Connection) -> int:
    """Drop the index's entries of items that are gone: deleted with SQL by hand on SQLite, whose index (an FTS5
    table) has no foreign key; PostgreSQL's deletes them with their item (ON DELETE CASCADE). How many went."""
    if connection.dialect.name != "sqlite":
        return 0
    return connection.execute(_SQLITE_DROP_MISSING).rowcount


_SQLITE_DROP_MISSING = text("DELETE FROM item_search WHERE rowid NOT IN (SELECT id FROM items)")


def _write(connection: Connection, chunk: list[dict[str, object]], *, sqlite: bool) -> int:
    if sqlite:
        # FTS5 has no upsert: the old entry goes first (deleting a missing rowid is a no-op).
        connection.execute(_SQLITE_DELETE, [{"item_id": row["item_id"]} for row in chunk])
        connection.execute(_SQLITE_INSERT, chunk)
    else:
        connection.execute(_PG_UPSERT, chunk)
    return len(chunk)


def tsvector(title: str, summary: str, description: str) -> str:
    """The item's PostgreSQL tsvector as a literal: each field's distinct words, weighted A (title),
    B (summary) or C (body), numbered in reading order so that ts_rank_cd sees which words are near."""
    positions: dict[str, list[str]] = {}
    position = 0
    for weight, value in (("A", title), ("B", summary), ("C", description)):
        for word in field_words(value):
            position = min(position + 1, _PG_MAX_POSITION)
            positions.setdefault(word, []).append(f"{position}{weight}")
    return " ".join(f"{_pg_quote(word)}:{','.join(at)}" for word, at in positions.items())


def _pg_quote(word: str) -> str:
    """A lexeme quoted for tsvector/tsquery input. Words are `\\w+` and cannot hold a quote or an
    operator; quoting anyway keeps the literal safe whatever `words()` becomes."""
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


# --- querying it -------------------------------------------------------------------------------------------


def query_words(q: str) -> list[str]:
    seen: list[str] = []
    for word in words(q):
        if word not in seen:
            seen.append(word)
    return seen[:MAX_QUERY_WORDS]


def is_prefix(word: str) -> bool:
    """Whether a query word stands for every word that begins with it. A single character stands for itself
    alone: as a prefix, "a" would be most of the index's words, and the work of a search with it the whole index."""
    return len(word) >= MIN_PREFIX


def fts5_query(prefixes: Sequence[str]) -> str:
    """`"slack"* AND "integ"*`: every word a quoted prefix term, so FTS5 reads none of it as syntax."""
    return " AND ".join('"' + word.replace('"', '""') + ('"*' if is_prefix(word) else '"') for word in prefixes)


def tsquery(prefixes: Sequence[str], *, weights: str = "") -> str:
    """`'slack':* & 'integ':*`, cast to tsquery as it is (never parsed by a text search configuration);
    `weights="A"` finds the words in the title only."""
    return " & ".join(_pg_quote(word) + (":*" if is_prefix(word) else ":" if weights else "") + weights
                      for word in prefixes)


class Tier(IntEnum):
    """Where every query word was found. Each tier ranks above the next, whatever the scores say."""

    title = 1  # every word in the title
    heading = 2  # every word in the title or summary, not all in the title
    anywhere = 3  # at least one word only in the description


@dataclass(frozen=True, slots=True)
class SearchHit:
    item: Item
    title_html: Markup
    snippet_html: Markup
    tier: Tier = Tier.anywhere  # where the words were found (similar-item suggestions weigh it)


def search_items(session: Session, viewer: Viewer, q: str, *, limit: int = 30) -> list[SearchHit]:
    """Items this viewer may see that contain every word of `q` as a word prefix, best first (`ranked`), with the
    matches highlighted: the items as ORM instances, their stage and product loaded, for code that goes on
    with them (similar-item suggestions). The search page takes `found` instead."""
    prefixes = query_words(q)
    ranked = _ranked(session, viewer, prefixes, limit)
    if not ranked:
        return []
    # The hits' rows in one more statement (stage and product joined in), put back in rank order; on PostgreSQL an
    # item deleted between the two statements is left out.
    loaded = {item.id: item for item in session.scalars(_hits_statement(), {"q_ids": list(ranked)})}
    return [
        SearchHit(item=item, title_html=highlight(item.title, prefixes),
                  snippet_html=highlight(snippet(item.summary, item.description, prefixes), prefixes), tier=tier)
        for item_id, tier in ranked.items() if (item := loaded.get(item_id)) is not None
    ]


def matching_ids(dialect: str, q: str) -> Select[int]:
    """The ids of every item holding each word of `q` as a word prefix, anywhere, whoever may see it, unranked and
    uncounted: the staff list filters by it (every match, however many, with the list's own filters and order)."""
    prefixes = query_words(q)
    if not prefixes:
        return select(Item.id).where(false())
    if dialect == "sqlite":
        fts: ColumnClause[Any] = literal_column("item_search")
        return select(_fts.c.rowid).where(fts.op("MATCH")(fts5_query(prefixes)))
    every = cast(literal(tsquery(prefixes)), TSQUERY)
    return select(_pg.c.item_id).where(_pg.c.document.op("@@", is_comparison=True)(every))


@dataclass(frozen=True, slots=True)
class Found:
    """A hit as the search page shows it, made from plain columns: loading each hit as an ORM item with its
    stage and product was over a third of a search's own CPU."""

    path: str
    title_html: Markup
    snippet_html: Markup
    product: str
    stage: str
    released_at: datetime | None  # when it shipped; None unless its stage is a released one
    timeframe: str | None  # while it is still ahead (`Item.planned_timeframe`)


def found(session: Session, viewer: Viewer, q: str, *, limit: int = 30) -> list[Found]:
    """`search_items`' hits, in its order, as the search page shows them."""
    prefixes = query_words(q)
    if not prefixes:
        return []
    connection = session.connection()
    if connection.dialect.name == "postgresql":
        # The tiers and the hits' columns in one statement (`_found_at_once`), its rows as the driver gives them (no
        # SQLAlchemy result processing: the enum and the UTC time made here)
        statement = _found_at_once(connection.dialect, viewer, ranked_anywhere=len(prefixes) > 1)
        params = {**_tier_params("postgresql", prefixes, Tier.title, found=()), "q_limit": limit}
        return [_shown(row, prefixes, timeframe=Timeframe(row.timeframe),
                       released_at=row.released_at and row.released_at.astimezone(UTC))
                for row in connection.exec_driver_sql(*statement.bound(params))]
    ranked = _ranked(session, viewer, prefixes, limit)
    if not ranked:
        return []
    rows = {row.id: row for row in connection.execute(_found_statement(), {"q_ids": list(ranked)})}
    return [_shown(row, prefixes, timeframe=row.timeframe, released_at=row.released_at)
            for row in (rows.get(item_id) for item_id in ranked) if row is not None]


def _shown(row: Any, prefixes: list[str], *, timeframe: Timeframe, released_at: datetime | None) -> Found:
    """A hit's row (`_found_columns`) as the page shows it, the query's words marked."""
    return Found(path=item_path(row.public_id, row.slug), title_html=highlight(row.title, prefixes),
                 snippet_html=highlight(snippet(row.summary, row.description, prefixes), prefixes),
                 product=row.product, stage=row.stage, released_at=released_at if row.is_released else None,
                 timeframe=None if row.is_released or row.is_closed else timeframe_label(
                     timeframe, row.target_year, row.target_quarter))


def _ranked(session: Session, viewer: Viewer, prefixes: list[str], limit: int) -> dict[int, Tier]:
    """The ids of the items this viewer may see that contain every word (`prefixes`) as a word prefix, best first,
    each with its tier.

    Hits come in tiers (`Tier`): title, then title or summary, then anywhere. Within a tier they are
    ranked by the weighted score (bm25 with title 10, summary 4, body 1 on SQLite; ts_rank_cd with
    1.0, 0.4, 0.1 on PostgreSQL), ties going to the most recently updated. The tiers are asked for one
    after the other until the page is full, so a common prefix such as "rep" is ranked among the few
    hundred titles that hold it, not among the thousands of descriptions. The last tier of a one-word
    query is simply newest first: each of its hits holds the word in its description alone, where the
    index keeps every word once, so a score would only reward short descriptions, and ranking every
    description that mentions a common word is what made such searches slow.
    """
    ranked: dict[int, Tier] = {}
    if not prefixes:
        return ranked
    connection = session.connection()
    dialect = connection.dialect
    for tier in Tier:
        params = _tier_params(dialect.name, prefixes, tier, found=ranked)
        params["q_limit"] = limit - len(ranked)
        statement = _tier_statement(dialect, viewer, tier, ranked=tier is not Tier.anywhere or len(prefixes) > 1)
        ranked.update(dict.fromkeys((row[0] for row in connection.exec_driver_sql(*statement.bound(params))), tier))
        if len(ranked) >= limit:
            break
    return ranked


def count_matches(session: Session, viewer: Viewer, q: str) -> int:
    """How many items this viewer may see contain every word of `q` as a word prefix, anywhere."""
    prefixes = query_words(q)
    if not prefixes:
        return 0
    stmt = visible_items(viewer).with_only_columns(func.count(Item.id), maintain_column_froms=True).order_by(None)
    if session.get_bind().dialect.name == "sqlite":
        fts: ColumnClause[Any] = literal_column("item_search")
        hits = select(_fts.c.rowid.label("item_id")).where(fts.op("MATCH")(fts5_query(prefixes))).subquery("hits")
        stmt = stmt.join(hits, hits.c.item_id == Item.id)
    else:
        every = cast(literal(tsquery(prefixes)), TSQUERY)
        stmt = stmt.join(_pg, _pg.c.item_id == Item.id).where(_pg.c.document.op("@@", is_comparison=True)(every))
    return session.scalar(stmt) or 0


def count_visible(session: Session, viewer: Viewer) -> int:
    """How many items this viewer may see (the collection the similarity weights are taken over)."""
    stmt = visible_items(viewer).with_only_columns(func.count(Item.id), maintain_column_froms=True).order_by(None)
    return session.scalar(stmt) or 0


# A tier's statement per (database, audience, tier, ranked), built and compiled once and run straight to the driver
# (`DriverSql`): through the ORM each of a search's one to three tier statements cost about 0.07 ms of CPU more on
# either database (bench/README.md). The query's words, the ids found above and the limit are its `q_` parameters
# (`_tier_params`). Audiences are few (one per segment); the bound only guards against the unforeseen.
_TIER_STATEMENTS: dict[tuple[type[Dialect], object, Tier, bool], DriverSql] = {}
_MAX_TIER_STATEMENTS = 1000


def _tier_statement(dialect: Dialect, viewer: Viewer, tier: Tier, *, ranked: bool) -> DriverSql:
    def compiled() -> DriverSql:
        base = visible_items(viewer).with_only_columns(Item.id)
        select_ = (_sqlite_tier if dialect.name == "sqlite" else _postgres_tier)(base, tier, ranked=ranked)
        select_ = select_.order_by(Item.updated_at.desc(), Item.id.desc()).limit(bindparam("q_limit", type_=Integer))
        return DriverSql.compiled(select_, dialect, given_prefix="q_")

    return _kept(_TIER_STATEMENTS, (type(dialect), audience(viewer) or "staff", tier, ranked), compiled)


def _kept(statements: dict[Any, DriverSql], key: Any, compiled: Callable[[], DriverSql]) -> DriverSql:
    """The statement kept under `key`, else `compiled()` kept there (the bound only guards against the unforeseen)."""
    statement = statements.get(key)
    if statement is None:
        if len(statements) >= _MAX_TIER_STATEMENTS:
            statements.clear()
        statement = statements[key] = compiled()
    return statement


def _tier_params(dialect: str, prefixes: Sequence[str], tier: Tier, *, found: Iterable[int]) -> dict[str, Any]:
    """The query's words as the tier's statement takes them: an FTS5 expression, or PostgreSQL's tsqueries; on SQLite
    also the ids the tiers above `found`."""
    if dialect != "sqlite":
        return {"q_every": tsquery(prefixes), "q_title": tsquery(prefixes, weights="A")}
    # Each tier's match leaves out the tiers above it by their ids (`q_seen`, `_sqlite_tier`), not by FTS5's NOT, which
    # walks the words' entries once more for the other side: a tier below runs only when the ones above found fewer than
    # their limit, so every item they match that this viewer may see is among those ids.
    every = fts5_query(prefixes)
    if tier is Tier.title:
        return {"q_match": f"{{title}} : ({every})"}
    return {"q_match": f"{{title summary}} : ({every})" if tier is Tier.heading else every,
            "q_seen": json.dumps(list(found))}


@cache
def _hits_statement() -> Select[Item]:
    """The hits' rows by id (`q_ids`), their stage and product joined in."""
    return (select(Item).where(Item.id.in_(bindparam("q_ids", expanding=True)))
            .options(joinedload(Item.stage), joinedload(Item.product)))


def _found_columns() -> tuple[Any, ...]:
    """What the search page shows of a hit, as plain columns (`_shown`)."""
    return (Item.id, Item.public_id, Item.slug, Item.title, Item.summary, Item.description, Item.timeframe,
            Item.target_year, Item.target_quarter, Item.released_at, Product.name.label("product"),
            Stage.name.label("stage"), Stage.is_released, Stage.is_closed)


@cache
def _found_statement() -> Select[Any]:
    """The hits' columns (`_found_columns`) by id (`q_ids`)."""
    return (select(*_found_columns())
            .join(Product, Product.id == Item.product_id).join(Stage, Stage.id == Item.stage_id)
            .where(Item.id.in_(bindparam("q_ids", expanding=True))))


# PostgreSQL's search page as one statement per (database, audience, whether the last tier is ranked), as
# `_TIER_STATEMENTS` are kept.
_FOUND_AT_ONCE: dict[tuple[type[Dialect], object, bool], DriverSql] = {}


def _found_at_once(dialect: Dialect, viewer: Viewer, *, ranked_anywhere: bool) -> DriverSql:
    """PostgreSQL: the tiers of `_ranked` and the hits' columns in **one statement** (a round trip instead of two to
    four; the tiers' own work is the same). Each tier is a CTE of its best hits in order, numbered, limited to what
    the tiers above left of `q_limit`: a tier whose limit is 0 is not run at all (PostgreSQL's LIMIT 0 reads nothing
    of its plan), as the loop of `_ranked` does not ask for it. PostgreSQL's tiers are disjoint by their conditions
    (`_postgres_tier`), so none needs the ids found above. Rows: `_found_columns` in tier and rank order."""
    return _kept(_FOUND_AT_ONCE, (type(dialect), audience(viewer) or "staff", ranked_anywhere),
                 lambda: _compiled_at_once(dialect, viewer, ranked_anywhere=ranked_anywhere))


def _compiled_at_once(dialect: Dialect, viewer: Viewer, *, ranked_anywhere: bool) -> DriverSql:
    left: Any = bindparam("q_limit", type_=Integer)
    numbered = []
    for tier in Tier:
        ranked = tier is not Tier.anywhere or ranked_anywhere
        base = visible_items(viewer).with_only_columns(Item.id, Item.updated_at)
        best = (_postgres_tier(base, tier, ranked=ranked, rank_column=True)
                .order_by(Item.updated_at.desc(), Item.id.desc()).limit(left).subquery(f"best_{tier.name}"))
        order = [best.c.rank.desc(), best.c.updated_at.desc(), best.c.id.desc()]
        hits = select(best.c.id, literal(int(tier)).label("tier"),
                      func.row_number().over(order_by=order).label("place")).cte(f"tier_{tier.name}")
        numbered.append(hits)
        left = left - select(func.count()).select_from(hits).scalar_subquery()
    every = union_all(*(select(hits.c.id, hits.c.tier, hits.c.place) for hits in numbered)).subquery("hits")
    # Each hit's columns looked up by its id: a lookup per hit, whatever the planner guesses of how many hits the
    # tiers' limits leave (joined plainly, or LATERAL without the LIMIT, which PostgreSQL flattens into a plain join,
    # it read every item to join a few: 28 ms for "re").
    shown = (select(*_found_columns()).join(Product, Product.id == Item.product_id)
             .join(Stage, Stage.id == Item.stage_id).where(Item.id == every.c.id).limit(1).lateral("shown"))
    select_ = select(*shown.c).select_from(every.join(shown, true())).order_by(every.c.tier, every.c.place)
    return DriverSql.compiled(select_, dialect, given_prefix="q_")


def _sqlite_tier(stmt: Select[int], tier: Tier, *, ranked: bool) -> Select[int]:
    fts: ColumnClause[Any] = literal_column("item_search")
    columns = [_fts.c.rowid.label("item_id")]
    if ranked:
        columns.append(func.bm25(fts, 10.0, 4.0, 1.0).label("rank"))
    hits = select(*columns).where(fts.op("MATCH")(bindparam("q_match", type_=Text))).subquery("hits")
    stmt = stmt.join(hits, hits.c.item_id == Item.id)
    if tier is not Tier.title:  # the ids the tiers above found, a JSON array (`_tier_params`'s `q_seen`)
        seen: Select[Any] = select(column("value")).select_from(func.json_each(bindparam("q_seen", type_=Text)))
        stmt = stmt.where(Item.id.not_in(seen.scalar_subquery()))
    return stmt.order_by(hits.c.rank) if ranked else stmt  # bm25: lower is better


def _postgres_tier(stmt: Select[*tuple[Any, ...]], tier: Tier, *, ranked: bool,
                   rank_column: bool = False) -> Select[*tuple[Any, ...]]:
    # The query's tsqueries as parameters PostgreSQL reads as tsquery, not text cast to it: with the prepared
    # statement's generic plan, a cast was made again for every row checked and ranked (the "anywhere" tier 1.55 ->
    # 1.31 ms of PostgreSQL's CPU, bench/README.md).
    every = bindparam("q_every", type_=TSQUERY)
    matches = _pg.c.document.op("@@", is_comparison=True)
    heading = _pg.c.heading.op("@@", is_comparison=True)  # the small GIN index on title + summary
    in_heading = heading(every)
    in_title = heading(bindparam("q_title", type_=TSQUERY))
    if tier is Tier.title:
        where = [in_title]
    elif tier is Tier.heading:
        where = [in_heading, not_(in_title)]
    else:
        where = [matches(every), not_(in_heading)]
    stmt = stmt.join(_pg, _pg.c.item_id == Item.id).where(*where)
    rank: Any = func.ts_rank_cd(_PG_WEIGHTS, _pg.c.document, every) if ranked else literal(0.0)
    if rank_column:  # the rank as a column `rank` too (0 when unranked), ordered by once
        rank = rank.label("rank")
        stmt = stmt.add_columns(rank)
    return stmt.order_by(rank.desc()) if ranked else stmt


# --- showing the hits ----------------------------------------------------------------------------------


def _fold_mapped(text: str) -> tuple[str, Sequence[int] | None]:
    """`fold(text)` and, for each folded character, the index of the character it came from (None
    when they are the same: ASCII text, the common case).

    Folding can change lengths ("…" becomes "...", "ﬁ" becomes "fi", a decomposed accent vanishes), so
    positions found in the folded text must be mapped back before they cut the original.
    """
    if text.isascii():
        return text.lower(), None
    # Each character folded by itself, as before, but the ASCII runs between the others in one piece each, and each
    # other character folded once per process: the description of a hit was walked character by character.
    out: list[str] = []
    origin: list[int] = []
    one_to_one = True
    pos = 0
    for run in _NOT_ASCII.finditer(text):
        start, end = run.span()
        if start > pos:
            out.append(text[pos:start].lower())
            origin.extend(range(pos, start))
        for index in range(start, end):
            folded = _fold_character(text[index])
            out.append(folded)
            if len(folded) == 1:
                origin.append(index)
            else:
                one_to_one = False
                origin.extend([index] * len(folded))
        pos = end
    if pos < len(text):
        out.append(text[pos:].lower())
        origin.extend(range(pos, len(text)))
    return "".join(out), (range(len(text)) if one_to_one else origin)


_NOT_ASCII = re.compile(r"[^\x00-\x7f]+")


@lru_cache(maxsize=4096)
def _fold_character(ch: str) -> str:
    return fold(ch)


@lru_cache(maxsize=256)
def _matcher(prefixes: tuple[str, ...]) -> re.Pattern[str]:
    """One pattern for all the query's words, made once per query: a word beginning with one of them (a
    single-character word only as a whole word, as the index matches it). Query words are `\\w+`, so two
    matches never overlap; the shortest word is tried first where several begin the same word."""
    alternatives = sorted(prefixes, key=len)
    return re.compile(r"(?<!\w)(?:" + "|".join(
        re.escape(p) + ("" if is_prefix(p) else r"(?!\w)") for p in alternatives) + ")")


def _match_spans(text: str, prefixes: list[str]) -> list[tuple[int, int]]:
    """Where words of `text` start with a query word, as sorted spans of the original text."""
    folded, origin = _fold_mapped(text)
    spans: list[tuple[int, int]] = []
    for m in _matcher(tuple(prefixes)).finditer(folded):
        if origin is None:
            spans.append((m.start(), m.end()))
            continue
        start, end = origin[m.start()], origin[m.end() - 1] + 1
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1  # keep a decomposed accent with its letter
        spans.append((start, end))
    return spans


def snippet(summary: str, description: str, prefixes: list[str], width: int = 180) -> str:
    """The summary when it holds a query word (or the description does not), else the part of the description
    around the first match."""
    if summary and _matcher(tuple(prefixes)).search(fold(summary)):
        return summary  # the description is not even flattened
    text = plain_text(description, limit=5000)
    positions = [start for start, _ in _match_spans(text, prefixes)]
    if not positions:
        return summary or plain_text(text, limit=width)
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
    # Escaped pieces joined as plain strings, made Markup once: a Markup per piece costs more than the search. Most
    # titles and snippets hold nothing to escape: their pieces are taken as they are (escaping each made a Markup
    # per piece, 7 a hit, a tenth of a never-repeated search's CPU).
    escaped: Callable[[str], str] = escape if _TO_ESCAPE.search(text) else str
    out: list[str] = []
    pos = 0
    for start, end in spans:
        if start < pos:
            continue
        out += (escaped(text[pos:start]), "<mark>", escaped(text[start:end]), "</mark>")
        pos = end
    out.append(escaped(text[pos:]))
    return Markup("".join(out))  # nosec B704 # every piece of the text is escaped above; the marks are ours


_TO_ESCAPE = re.compile("[&<>\"']")  # what markupsafe's escape replaces
