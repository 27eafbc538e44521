from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column, relationship

from app.db import Base, UTCDateTime, str_enum, utcnow
from app.organisations.models import Organisation


class Role(StrEnum):
    customer = "customer"
    pm = "pm"
    admin = "admin"


STAFF_ROLES = frozenset({Role.pm, Role.admin})


class User(Base):
    __tablename__ = "users"
    # Changing only these changes no page (app/revision.py): signing in does not empty the page caches.
    __unshown__ = frozenset({"last_login_at", "password_hash"})

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    role: Mapped[Role] = mapped_column(str_enum(Role, 16), default=Role.customer)
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    organisation_id: Mapped[int | None] = mapped_column(
        ForeignKey("organisations.id", ondelete="SET NULL"), index=True
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A contact of an organisation recorded by staff before they had an account; claimed at sign-in.
    is_placeholder: Mapped[bool] = mapped_column(Boolean, default=False)
    # Set when the person deleted their account: identity data is gone, the row stays for their votes.
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    organisation: Mapped[Organisation | None] = relationship(lazy="raise")

    @property
    def is_staff(self) -> bool:
        return self.is_active and self.role in STAFF_ROLES

    @property
    def is_staff_account(self) -> bool:
        """A PM's or admin's account, active or not: entered only by password or a provider mapped to staff."""
        return self.role in STAFF_ROLES

    @property
    def is_admin(self) -> bool:
        return self.is_active and self.role is Role.admin

    @property
    def name(self) -> str:
        return self.display_name or self.email.split("@", 1)[0]


class UserSession(Base):
    """A signed-in browser. The cookie holds a random token; only its SHA-256 is stored."""

    __tablename__ = "user_sessions"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_agent: Mapped[str] = mapped_column(String(300), default="")

    user: Mapped[User] = relationship(lazy="raise")


class Invitation(Base):
    """A link that lets a new staff member set their password. Only the token's hash is stored."""

    __tablename__ = "invitations"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320))
    role: Mapped[Role] = mapped_column(str_enum(Role, 16))
    invited_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class IdentityKind(StrEnum):
    oidc = "oidc"
    email = "email"
    sso = "sso"


class Identity(Base):
    """One way a user signs in: an OIDC issuer + subject, an email address, a host-app SSO subject."""

    __tablename__ = "identities"
    __table_args__ = (UniqueConstraint("kind", "issuer", "subject"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    kind: Mapped[IdentityKind] = mapped_column(str_enum(IdentityKind, 10))
    issuer: Mapped[str] = mapped_column(String(300))
    subject: Mapped[str] = mapped_column(String(300))
    email: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class MagicLink(Base):
    """A single-use sign-in link sent by email; only the token's hash is kept."""

    __tablename__ = "magic_links"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    next_path: Mapped[str] = mapped_column(String(2000), default="/")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class UsedToken(Base):
    """Token ids (JWT `jti`) already accepted, kept until they expire, so none is used twice."""

    __tablename__ = "used_tokens"
    __table_args__ = (Index("ix_used_tokens_expires_at", "expires_at"),)

    jti: Mapped[str] = mapped_column(String(200), primary_key=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)


class TokenScope(StrEnum):
    read = "read"
    write = "write"  # read and write


class ApiToken(Base):
    """A staff member's credential for the API (`Authorization: Bearer ahead_…`).

    Only the SHA-256 of the token is stored: the token is 256 random bits, so a fast hash is enough (nobody
    can guess their way back from it), and it lets a request find its row by an indexed equality. `prefix`
    is the start of the token, shown in the list so people can tell their tokens apart.
    """

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(80))
    scope: Mapped[TokenScope] = mapped_column(str_enum(TokenScope, 16), default=TokenScope.read)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_by_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    user: Mapped[User] = relationship(foreign_keys=[user_id], lazy="raise")

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)
