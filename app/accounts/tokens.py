"""Staff API tokens: created in the admin, shown once, stored as a SHA-256, listed with their last use, revoked.

A token is `ahead_` followed by 43 URL-safe characters (256 random bits), sent as `Authorization: Bearer …`
and nowhere else (never a cookie or a query string: those end up in logs, histories and Referer headers).
Because it is that random, a fast hash is enough: nobody can search back from the stored SHA-256, and a
request finds its row by one indexed equality on the digest (the database compares digests, never the
secret; the row's digest is compared once more with `hmac.compare_digest`). A token works only while it is
not revoked, not expired, and its owner is an active staff member; disabling the owner or taking their staff
role revokes their tokens for good. Everyone manages their own tokens; admins see and revoke everyone's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime, timedelta
from typing import Annotated

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session, joinedload

from app.accounts.models import ApiToken, TokenScope, User
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import utcnow
from app.errors import NotFound
from app.forms import FormModel, choice, text, whole_number

PREFIX = "ahead_"  # nosec B105 # the public start of every token, not a secret
SHOWN_PREFIX = len(PREFIX) + 6  # "ahead_" and six characters, shown in the list
MAX_LENGTH = 100  # anything longer is not one of ours: refused before hashing
# Last use is written at most this often per token: one small write a minute, not one per request.
LAST_USE_EVERY = timedelta(minutes=1)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class TokenCreate(FormModel):
    """The new-token form: a name to tell it apart, read or read-write, and an optional lifetime in days."""

    name: Annotated[str, text(80, required="Give the token a name, such as “Weekly desk report”.", collapse=True)] = ""
    scope: Annotated[TokenScope, choice(TokenScope, "Choose read, or read and write.")] = TokenScope.read
    expires_in_days: Annotated[int | None, whole_number(
        "A whole number of days from 1 to 3650, or leave it empty for a token that does not expire.",
        minimum=1, maximum=3650, required=False)] = None


def create_token(session: Session, *, owner: User, data: TokenCreate) -> tuple[ApiToken, str]:
    """A new token for `owner` (the person creating it): the row and the token itself, which is never stored
    and so can be shown this once only. Audited without the token."""
    secret = PREFIX + secrets.token_urlsafe(32)
    now = utcnow()
    token = ApiToken(user_id=owner.id, name=data.name, scope=data.scope, token_hash=digest(secret),
                     prefix=secret[:SHOWN_PREFIX], created_at=now, created_by_id=owner.id,
                     expires_at=now + timedelta(days=data.expires_in_days) if data.expires_in_days else None)
    session.add(token)
    session.flush()
    audit.record(session, actor=owner, action=AuditAction.api_token_created, entity_type="api_token",
                 label=f"{data.name} ({token.prefix}…)",
                 changes={"name": [None, data.name], "scope": [None, data.scope.value],
                          "expires_at": [None, token.expires_at], "owner": [None, owner.email]})
    return token, secret


def list_tokens(session: Session, *, viewer: User) -> list[ApiToken]:
    """The tokens this person may manage: an admin's list is everyone's, a PM's their own; newest first."""
    stmt = select(ApiToken).options(joinedload(ApiToken.user)).order_by(ApiToken.created_at.desc(), ApiToken.id.desc())
    if not viewer.is_admin:
        stmt = stmt.where(ApiToken.user_id == viewer.id)
    return list(session.scalars(stmt))


def revoke_token(session: Session, *, token_id: int, actor: User) -> ApiToken:
    """Revoke a token (their own for anyone, any for an admin); NotFound for a token they may not manage."""
    token = session.scalar(select(ApiToken).options(joinedload(ApiToken.user)).where(ApiToken.id == token_id))
    if token is None or (token.user_id != actor.id and not actor.is_admin):
        raise NotFound("No such token.")
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        session.flush()
        audit.record(session, actor=actor, action=AuditAction.api_token_revoked, entity_type="api_token",
                     # Whose token it was is part of what was revoked, not a change: in the label, so the entry
                     # does not read as if the owner changed.
                     label=f"{token.name} ({token.prefix}…) of {token.user.email}",
                     changes={"revoked": [False, True]})
    return token


def revoke_all_for(session: Session, *, user: User) -> None:
    """Revoke every token of a person who stopped being active staff (disabled, or no longer PM or admin)."""
    session.execute(update(ApiToken).where(ApiToken.user_id == user.id, ApiToken.revoked_at.is_(None))
                    .values(revoked_at=utcnow()))


def authenticate(session: Session, presented: str, *, now: datetime | None = None) -> ApiToken | None:
    """The token row for a presented token (with its owner and the owner's organisation loaded), or None:
    not ours, revoked, expired, or its owner is no longer active staff."""
    if not presented.startswith(PREFIX) or len(presented) > MAX_LENGTH:
        return None
    wanted = digest(presented)
    token = session.scalar(select(ApiToken).options(joinedload(ApiToken.user).joinedload(User.organisation))
                           .where(ApiToken.token_hash == wanted))
    if token is None or not hmac.compare_digest(token.token_hash, wanted):
        return None
    if not token.usable(now or utcnow()) or not token.user.is_staff:
        return None
    return token


def needs_touch(token: ApiToken, now: datetime) -> bool:
    return token.last_used_at is None or now - token.last_used_at >= LAST_USE_EVERY


def mark_used(session: Session, *, token_id: int, now: datetime) -> None:
    """Note the token's use, unless another request did in the last minute (one conditional UPDATE)."""
    session.execute(update(ApiToken).where(
        ApiToken.id == token_id,
        or_(ApiToken.last_used_at.is_(None), ApiToken.last_used_at <= now - LAST_USE_EVERY),
    ).values(last_used_at=now))
