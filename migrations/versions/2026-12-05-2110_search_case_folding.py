"""search: the index's words case folded ('Straße' is 'strasse'), not lower-cased

Revision ID: 3f7c2a91d5e4
Revises: c82d8e1bc9e0
Create Date: 2026-12-05 21:10:00

app/roadmap/search.py `fold` now uses Unicode's case folding where it used lower case, so 'ß' is 'ss' and
'strasse' finds 'Straße' (a walk-through's finding). The index holds words folded the old way: each item whose words
come out otherwise is indexed again here, with copies of both foldings as they are when this migration is written (a
migration must not change when the app does). Text in ASCII folds the same both ways and is not rewritten.
Downgrade: the same items indexed the old way again.
"""

import re
import unicodedata
from collections.abc import Callable, Iterator, Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "3f7c2a91d5e4"
down_revision: str | None = "c82d8e1bc9e0"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_WORD = re.compile(r"\w+", re.UNICODE)
_BATCH = 1000

Fold = Callable[[str], str]


def _folded(case: Fold) -> Fold:
    def fold(text: str) -> str:
        decomposed = unicodedata.normalize("NFKD", case(text))
        return "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return fold


_LOWER = _folded(str.lower)
_CASEFOLD = _folded(str.casefold)


def _field_words(fold: Fold, text: str | None) -> list[str]:
    return list(dict.fromkeys(w[:64] for w in _WORD.findall(fold(text or ""))))


def _quote(word: str) -> str:
    return "'" + word.replace("\\", "\\\\").replace("'", "''") + "'"


def _tsvector(fold: Fold, title: str, summary: str, description: str) -> str:
    positions: dict[str, list[str]] = {}
    position = 0
    for weight, value in (("A", title), ("B", summary), ("C", description)):
        for word in _field_words(fold, value):
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


def _reindex(old: Fold, new: Fold) -> None:
    """Index again, folded by `new`, each item whose words `old` folded otherwise."""
    bind = op.get_bind()
    sqlite = bind.dialect.name == "sqlite"
    for rows in _items(bind):
        changed = [r for r in rows
                   if not all(v.isascii() for v in (r.title or "", r.summary or "", r.description or ""))
                   and any(_field_words(old, v) != _field_words(new, v) for v in (r.title, r.summary, r.description))]
        if not changed:
            continue
        if sqlite:
            bind.execute(sa.text("DELETE FROM item_search WHERE rowid = :id"), [{"id": r.id} for r in changed])
            bind.execute(sa.text("INSERT INTO item_search (rowid, title, summary, body) "
                                 "VALUES (:id, :title, :summary, :body)"),
                         [{"id": r.id, "title": " ".join(_field_words(new, r.title)),
                           "summary": " ".join(_field_words(new, r.summary)),
                           "body": " ".join(_field_words(new, r.description))} for r in changed])
        else:
            bind.execute(sa.text("UPDATE item_search SET document = CAST(:document AS tsvector), "
                                 "heading = ts_filter(CAST(:document AS tsvector), '{a,b}') WHERE item_id = :id"),
                         [{"id": r.id, "document": _tsvector(new, r.title, r.summary, r.description)}
                          for r in changed])


def upgrade() -> None:
    _reindex(_LOWER, _CASEFOLD)


def downgrade() -> None:
    _reindex(_CASEFOLD, _LOWER)
