"""Plain factory functions: make_x(session, **overrides)."""

from __future__ import annotations

import functools
import itertools
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.accounts import passwords
from app.accounts import service as accounts
from app.accounts.models import Role, User
from app.db import utcnow
from app.roadmap import search
from app.roadmap import service as roadmap
from app.roadmap.models import Item, Product, Stage, StageChange, Tag, Timeframe, Visibility

_counter = itertools.count(1)
PASSWORD = "correct horse battery"
# PASSWORD hashed once, ahead of time, with the app's argon2 parameters: argon2 is slow on purpose
# (0.2 to 0.6 s a hash on this machine), and most users a test makes never sign in with a password, so
# none of them pays for a hash. tests/test_factories.py checks it still matches PASSWORD and today's
# parameters (if those change, paste the hash it prints).
PASSWORD_HASH = "$argon2id$v=19$m=65536,t=3,p=4$BgmKm+3NP3c8UD5dnu+BIA$z8WlWfGTurdZOoQYk87mmZ4HR8jUUIXo5kxSSya7QBQ"


def password_hash(password: str) -> str:
    """The stored hash for a test password: PASSWORD's is precomputed, any other is hashed once per run."""
    return PASSWORD_HASH if password == PASSWORD else _hash_once(password)


@functools.cache
def _hash_once(password: str) -> str:
    return passwords.hash_password_blocking(password)


def make_user(session: Session, *, role: Role = Role.customer, email: str | None = None,
              password: str | None = PASSWORD, **overrides: Any) -> User:
    n = next(_counter)
    user = accounts.create_user(session, email=email or f"user{n}@example.com", role=role,
                                password_hash=password_hash(password) if password is not None else None,
                                display_name=overrides.pop("display_name", f"User {n}"))
    for key, value in overrides.items():
        setattr(user, key, value)
    session.flush()
    return user


def make_admin(session: Session, **overrides: Any) -> User:
    return make_user(session, role=Role.admin, **overrides)


def make_pm(session: Session, **overrides: Any) -> User:
    return make_user(session, role=Role.pm, **overrides)


def stage(session: Session, slug: str) -> Stage:
    found = session.scalar(select(Stage).where(Stage.slug == slug))
    assert found is not None, slug
    return found


def make_product(session: Session, **overrides: Any) -> Product:
    n = next(_counter)
    product = Product(name=overrides.pop("name", f"Product {n}"), slug=overrides.pop("slug", f"product-{n}"),
                      **overrides)
    session.add(product)
    session.flush()
    return product


def make_tag(session: Session, name: str | None = None) -> Tag:
    n = next(_counter)
    name = name or f"Tag {n}"
    tag = Tag(name=name, slug=roadmap.slugify(name) + f"-{n}")
    session.add(tag)
    session.flush()
    return tag


def make_item(session: Session, *, product: Product | None = None, stage_slug: str = "planned",
              published: bool = True, visibility: Visibility = Visibility.public, tags: list[Tag] | None = None,
              **overrides: Any) -> Item:
    """An item written straight to the database (the admin form has its own tests)."""
    n = next(_counter)
    now = utcnow()
    the_stage = stage(session, stage_slug)
    title = overrides.pop("title", f"Item number {n}")
    item = Item(
        public_id=overrides.pop("public_id", f"it{n:06d}"),
        slug=roadmap.slugify(title),
        title=title,
        summary=overrides.pop("summary", f"Summary of item {n}"),
        description=overrides.pop("description", f"Description of item {n}."),
        product_id=(product or make_product(session)).id,
        stage_id=the_stage.id,
        timeframe=overrides.pop("timeframe", Timeframe.next),
        visibility=visibility,
        published_at=now if published else None,
        released_at=now if the_stage.is_released else None,
        created_at=overrides.pop("created_at", now),
        updated_at=overrides.pop("updated_at", now),
        tags=list(tags or []),  # set before the first flush: the relationship is lazy="raise"
        **overrides,
    )
    session.add(item)
    session.flush()
    session.add(StageChange(item_id=item.id, to_stage_id=the_stage.id, changed_at=now))
    session.flush()
    search.index_item(session, item)
    return item
