"""Webhook names and links' keys unique in the database; webhooks scoped to one tracker (and optionally narrower)

Revision ID: 8c4f1a2d9e57
Revises: 3f6a9c2e8d14
Create Date: 2026-12-03 12:00

Until now only the service looked for a webhook of the same name (any letter case) or a link of the same
issue (GitHub/GitLab paths in any letter case) on the same initiative or item: two requests at the same instant
could both pass. Duplicates that got in are resolved before the unique indexes are made:

* links: the same issue on the same initiative (or item) is one link; the oldest (lowest id) is kept, and
  it takes the newest tracker news any of its copies held (status, started, done, tracker_updated_at) so no
  delivery is lost. The others are deleted (their audit events stay).
* webhooks: a name used again (any letter case) gets " (2)", " (3)"… on the later webhooks (by id); their
  addresses and secrets do not change, so trackers keep delivering.

`tracker` says whose links a webhook may update: a GitHub/GitLab/Jira hook its own tracker's; a generic
hook made before this revision keeps updating any tracker's (NULL), a new one names its tracker.
Downgrade drops the indexes and columns; merged or renamed rows stay as they are.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "8c4f1a2d9e57"
down_revision: str | None = "3f6a9c2e8d14"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _merge_duplicate_links(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text(
        "SELECT id, initiative_id, item_id, kind, lower(key), status, started, done, tracker_updated_at "
        "FROM backlog_links ORDER BY id")).all()
    groups: dict[tuple[object, ...], list[sa.Row]] = {}
    for row in rows:
        groups.setdefault((row[1], row[2], row[3], row[4]), []).append(row)
    for copies in groups.values():
        if len(copies) < 2:
            continue
        kept, others = copies[0], copies[1:]
        dated = [c for c in copies if c.tracker_updated_at is not None]
        # The newest tracker news wins (the rule deliveries follow); undated, the latest-made copy's.
        news = max(dated, key=lambda c: (c.tracker_updated_at, c.id)) if dated else copies[-1]
        conn.execute(sa.text("UPDATE backlog_links SET status = :status, started = :started, done = :done, "
                             "tracker_updated_at = :at WHERE id = :id"),
                     {"status": news.status, "started": any(bool(c.started) for c in copies), "done": news.done,
                      "at": news.tracker_updated_at, "id": kept.id})
        conn.execute(sa.text("DELETE FROM backlog_links WHERE id IN :ids").bindparams(
            sa.bindparam("ids", expanding=True)), {"ids": [c.id for c in others]})


def _rename_duplicate_hooks(conn: sa.Connection) -> None:
    rows = conn.execute(sa.text("SELECT id, name FROM tracker_hooks ORDER BY id")).all()
    taken = {name.lower() for _, name in rows}
    seen: set[str] = set()
    for hook_id, name in rows:
        if name.lower() not in seen:
            seen.add(name.lower())
            continue
        number = 2
        while f"{name[:70]} ({number})".lower() in taken:
            number += 1
        new = f"{name[:70]} ({number})"
        taken.add(new.lower())
        seen.add(new.lower())
        conn.execute(sa.text("UPDATE tracker_hooks SET name = :name WHERE id = :id"), {"name": new, "id": hook_id})


def upgrade() -> None:
    conn = op.get_bind()
    _merge_duplicate_links(conn)
    _rename_duplicate_hooks(conn)
    op.drop_index("uq_backlog_links_initiative_key", table_name="backlog_links")
    op.drop_index("uq_backlog_links_item_key", table_name="backlog_links")
    op.create_index("uq_backlog_links_initiative_key", "backlog_links",
                    ["initiative_id", "kind", sa.text("lower(key)")], unique=True)
    op.create_index("uq_backlog_links_item_key", "backlog_links", ["item_id", "kind", sa.text("lower(key)")],
                    unique=True)
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.add_column(sa.Column("tracker", sa.String(16), nullable=True))
        batch.add_column(sa.Column("scope", sa.String(300), nullable=False, server_default=""))
    op.execute(sa.text("UPDATE tracker_hooks SET tracker = kind WHERE kind <> 'generic'"))
    op.create_index("uq_tracker_hooks_name", "tracker_hooks", [sa.text("lower(name)")], unique=True)


def downgrade() -> None:
    op.drop_index("uq_tracker_hooks_name", table_name="tracker_hooks")
    with op.batch_alter_table("tracker_hooks") as batch:
        batch.drop_column("scope")
        batch.drop_column("tracker")
    op.drop_index("uq_backlog_links_item_key", table_name="backlog_links")
    op.drop_index("uq_backlog_links_initiative_key", table_name="backlog_links")
    op.create_index("uq_backlog_links_initiative_key", "backlog_links", ["initiative_id", "kind", "key"], unique=True)
    op.create_index("uq_backlog_links_item_key", "backlog_links", ["item_id", "kind", "key"], unique=True)
