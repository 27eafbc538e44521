"""full-text search: FTS5 on SQLite, tsvector + GIN on PostgreSQL, in place of the word index

Revision ID: 50067dc78035
Revises: 4650dc66b13d
Create Date: 2026-11-25 19:31:00

`item_search` is not in the ORM metadata (an FTS5 virtual table and its shadow tables on SQLite, a
tsvector table on PostgreSQL); app/roadmap/search.py writes and reads it and lists its tables in
`INDEX_TABLES`, which Alembic's comparisons skip. Existing items are indexed here, with a copy of the
tokenizer as it was when this migration was written (a migration must not change when the app does).
"""

import re
import unicodedata
from collections.abc import Iterator, Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '50067dc78035'
down_revision: str | None = '4650dc66b13d'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORD = re.compile(r"\w+", re.UNICODE)
_BATCH = 1000


def _words(text: str | None) -> list[str]:
    decomposed = unicodedata.normalize("NFKD", (text or "").lower())
    folded = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return [w[:64] for w in _WORD.findall(folded)]


def _field_words(text: str | None) -> list[str]:
    return list(dict.fromkeys(_words(text)))


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _tsvector(title: str, summary: str, description: str) -> str:
    positions: dict[str, list[str]] = {}
    position = 0
    for weight, value in (("A", title), ("B", summary), ("C", description)):
        for word in _field_words(value):
            position = min(position + 1, 16383)
            positions.setdefault(word, []).append(f"{position}{weight}")
    return " ".join(f"{_quote(word)}:{','.join(at)}" for word, at in positions.items())


def _items(bind: sa.engine.Connection) -> Iterator[list[sa.Row]]:
    last = 0
    while True:
        rows = bind.execute(sa.text("SELECT id, title, summary, description FROM items WHERE id > :last "
                                    "ORDER BY id LIMIT :n"), {"last": last, "n": _BATCH}).all()
        if not rows:
            return
        yield rows
        last = rows[-1].id


def upgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        # Words arrive folded and split by the app, one space apart; unicode61 with '_' as a word
        # character then keeps them as they are. The prefix index serves 2-4 letter prefixes.
        op.execute("CREATE VIRTUAL TABLE item_search USING fts5(title, summary, body, "
                   "tokenize = \"unicode61 remove_diacritics 2 tokenchars '_'\", prefix = '2 3 4')")
        insert = sa.text("INSERT INTO item_search (rowid, title, summary, body) "
                         "VALUES (:id, :title, :summary, :body)")
        for rows in _items(bind):
            bind.execute(insert, [{"id": r.id, "title": " ".join(_field_words(r.title)),
                                   "summary": " ".join(_field_words(r.summary)),
                                   "body": " ".join(_field_words(r.description))} for r in rows])
    else:
        op.create_table('item_search',
        sa.Column('item_id', sa.Integer(), nullable=False),
        sa.Column('document', postgresql.TSVECTOR(), nullable=False),
        sa.Column('heading', postgresql.TSVECTOR(), nullable=False),
        sa.ForeignKeyConstraint(['item_id'], ['items.id'], name='fk_item_search_item_id_items', ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('item_id', name='pk_item_search')
        )
        insert = sa.text("INSERT INTO item_search (item_id, document, heading) VALUES "
                         "(:id, CAST(:document AS tsvector), ts_filter(CAST(:document AS tsvector), '{a,b}'))")
        for rows in _items(bind):
            bind.execute(insert, [{"id": r.id, "document": _tsvector(r.title, r.summary, r.description)}
                                  for r in rows])
        # Built after the backfill, in one go. fastupdate off: items are written rarely (a staff edit)
        # and read on every search, so each write goes straight into the index rather than into a
        # pending list that every search would have to scan until a vacuum merged it.
        op.create_index('ix_item_search_document', 'item_search', ['document'], postgresql_using='gin',
                        postgresql_with={'fastupdate': 'off'})
        op.create_index('ix_item_search_heading', 'item_search', ['heading'], postgresql_using='gin',
                        postgresql_with={'fastupdate': 'off'})

    with op.batch_alter_table('search_terms', schema=None) as batch_op:
        batch_op.drop_index('ix_search_terms_term')
    op.drop_table('search_terms')


def downgrade() -> None:
    bind = op.get_bind()
    op.create_table('search_terms',
    sa.Column('item_id', sa.Integer(), nullable=False),
    sa.Column('term', sa.String(length=64).with_variant(sa.String(length=64, collation='C'), 'postgresql'), nullable=False),
    sa.Column('field', sa.SmallInteger(), nullable=False),
    sa.ForeignKeyConstraint(['item_id'], ['items.id'], name=op.f('fk_search_terms_item_id_items'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('item_id', 'term', 'field', name=op.f('pk_search_terms'))
    )
    with op.batch_alter_table('search_terms', schema=None) as batch_op:
        batch_op.create_index('ix_search_terms_term', ['term'], unique=False)
    # The word index as the previous revision's code wrote it: (item, word, field), title 3,
    # summary 2, body 1.
    insert = sa.text("INSERT INTO search_terms (item_id, term, field) VALUES (:item_id, :term, :field)")
    for rows in _items(bind):
        terms: dict[tuple[int, str, int], None] = {}
        for r in rows:
            for field, value in ((3, r.title), (2, r.summary), (1, r.description)):
                for word in _words(value):
                    terms[(r.id, word, field)] = None
        if terms:
            bind.execute(insert, [{"item_id": i, "term": t, "field": f} for (i, t, f) in terms])

    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE item_search")  # its shadow tables go with it
    else:
        op.drop_index('ix_item_search_heading', table_name='item_search', postgresql_using='gin')
        op.drop_index('ix_item_search_document', table_name='item_search', postgresql_using='gin')
        op.drop_table('item_search')
