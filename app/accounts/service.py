"""Users, passwords, sessions and staff invitations. All SQL of the accounts domain lives here."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, joinedload

from app.accounts.models import Identity, IdentityKind, Invitation, Role, User, UserSession
from app.audit import service as audit
from app.db import utcnow
from app.errors import AppError, Conflict, FormInvalid, NotFound

_hasher = PasswordHasher()
# Verified against when the email is unknown, so both failures take the same time.
_DUMMY_HASH = _hasher.hash("not-a-real-password-" + secrets.token_hex(8))

MIN_PASSWORD_LENGTH = 10
INVITATION_DAYS = 7


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def normalise_email(email: str) -> str:
    return email.strip().lower()


def validate_email(email: str) -> str:
    from email_validator import EmailNotValidError
    from email_validator import validate_email as _validate

    try:
        return normalise_email(_validate(email.strip(), check_deliverability=False).normalized)
    except EmailNotValidError:
        raise FormInvalid({"email": "Enter a valid email address, like name@example.com."}) from None


def check_password_strength(password: str, *, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FormInvalid({field: f"Use at least {MIN_PASSWORD_LENGTH} characters."})
    if len(password) > 1024:
        raise FormInvalid({field: "That password is too long (1024 characters at most)."})


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound()
    return user


def list_staff(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.role.in_([Role.pm, Role.admin])).order_by(User.email)))


def authenticate(session: Session, *, email: str, password: str) -> User | None:
    """The user whose password this is, or None; unknown emails cost the same as wrong passwords."""
    user = get_user_by_email(session, email)
    if user is None or not user.password_hash or not user.is_active:
        try:
            _hasher.verify(_DUMMY_HASH, password)
        except VerificationError:
            pass
        return None
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def create_user(
    session: Session, *, email: str, role: Role, password: str | None = None, display_name: str = ""
) -> User:
    email = validate_email(email)
    if get_user_by_email(session, email) is not None:
        raise Conflict(f"A user with the email {email} already exists.")
    if password is not None:
        check_password_strength(password)
    user = User(
        email=email,
        role=role,
        display_name=display_name.strip()[:120],
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, user: User, password: str) -> None:
    """Set a new password and end every session of the user (they sign in again)."""
    check_password_strength(password)
    user.password_hash = hash_password(password)
    end_all_sessions(session, user=user)


def change_password(session: Session, *, user: User, current: str, new: str, confirm: str) -> None:
    errors: dict[str, str] = {}
    try:
        if not user.password_hash or not _hasher.verify(user.password_hash, current):
            errors["current_password"] = "That is not your current password."
    except (VerificationError, InvalidHashError):
        errors["current_password"] = "That is not your current password."
    try:
        check_password_strength(new, field="new_password")
    except FormInvalid as exc:
        errors.update(exc.errors)
    if new != confirm:
        errors["confirm_password"] = "The two new passwords differ."
    if errors:
        raise FormInvalid(errors)
    user.password_hash = hash_password(new)
    session.flush()
    audit.record(session, actor=user, action="user.password_changed", entity=user)


# --- sessions -----------------------------------------------------------------------------------


def start_session(session: Session, *, user: User, user_agent: str = "", days: int = 14) -> str:
    """A new session id at every sign-in; returns the raw token for the cookie."""
    token = secrets.token_urlsafe(32)
    session.add(
        UserSession(
            id=_digest(token),
            user_id=user.id,
            expires_at=utcnow() + timedelta(days=days),
            user_agent=user_agent[:300],
        )
    )
    user.last_login_at = utcnow()
    session.flush()
    return token


def load_session(session: Session, token: str) -> UserSession | None:
    if not token or len(token) > 100:
        return None
    row = session.scalar(
        select(UserSession)
        .options(joinedload(UserSession.user).joinedload(User.organisation))
        .where(UserSession.id == _digest(token))
    )
    if row is None or row.expires_at <= utcnow() or not row.user.is_active:
        return None
    return row


def end_session(session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.id == _digest(token)))


def end_all_sessions(session: Session, *, user: User) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user.id))


# --- invitations ----------------------------------------------------------------------------------


def invite_staff(session: Session, *, email: str, role: Role, invited_by: User) -> tuple[Invitation, str]:
    """An invitation for a new PM or admin; returns it with the raw token for the link."""
    if role not in (Role.pm, Role.admin):
        raise FormInvalid({"role": "Choose product manager or admin."})
    email = validate_email(email)
    existing = get_user_by_email(session, email)
    if existing is not None and existing.password_hash:
        raise FormInvalid({"email": "This person already has an account."})
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        token_hash=_digest(token),
        email=email,
        role=role,
        invited_by_id=invited_by.id,
        expires_at=utcnow() + timedelta(days=INVITATION_DAYS),
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session, actor=invited_by, action="invitation.created", entity=invitation,
        label=email, changes={"role": [None, role.value]},
    )
    return invitation, token


def find_invitation(session: Session, token: str) -> Invitation:
    invitation = session.scalar(select(Invitation).where(Invitation.token_hash == _digest(token)))
    if invitation is None or invitation.accepted_at is not None or invitation.expires_at <= utcnow():
        raise NotFound("This invitation link is not valid any more. Ask an admin to send a new one.")
    return invitation


def accept_invitation(
    session: Session, *, token: str, display_name: str, password: str, confirm: str
) -> User:
    invitation = find_invitation(session, token)
    errors: dict[str, str] = {}
    try:
        check_password_strength(password)
    except FormInvalid as exc:
        errors.update(exc.errors)
    if password != confirm:
        errors["confirm_password"] = "The two passwords differ."
    if errors:
        raise FormInvalid(errors)
    user = get_user_by_email(session, invitation.email)
    if user is None:
        user = User(email=invitation.email, role=invitation.role)
        session.add(user)
    else:
        user.role = invitation.role
        user.is_active = True
    user.display_name = display_name.strip()[:120]
    user.password_hash = hash_password(password)
    invitation.accepted_at = utcnow()
    session.flush()
    audit.record(
        session, actor=user, action="invitation.accepted", entity=user,
        changes={"role": [None, invitation.role.value]},
    )
    return user


def list_pending_invitations(session: Session) -> list[Invitation]:
    return list(
        session.scalars(
            select(Invitation)
            .where(Invitation.accepted_at.is_(None), Invitation.expires_at > utcnow())
            .order_by(Invitation.created_at.desc())
        )
    )


def set_user_active(session: Session, *, user: User, active: bool, actor: User) -> None:
    """Disabling a user ends all of their sessions at once."""
    if user.id == actor.id and not active:
        raise FormInvalid({"user": "You cannot disable your own account."})
    before = user.is_active
    user.is_active = active
    if not active:
        end_all_sessions(session, user=user)
    audit.record(session, actor=actor, action="user.updated", entity=user, changes={"is_active": [before, active]})


def set_user_role(session: Session, *, user: User, role: Role, actor: User) -> None:
    if user.id == actor.id and role is not Role.admin:
        raise FormInvalid({"role": "You cannot remove your own admin role."})
    before = user.role
    if before is role:
        return
    user.role = role
    audit.record(session, actor=actor, action="user.updated", entity=user, changes={"role": [before.value, role.value]})


def count_admins(session: Session) -> int:
    return session.scalar(select(func.count()).select_from(User).where(User.role == Role.admin)) or 0


# --- identities: OIDC, email magic links, host-app SSO -------------------------------------------------


class SignInFailed(AppError):
    """A sign-in that cannot go through; the message says what the person can do about it."""

    status_code = 400
    title = "We could not sign you in"

    @property
    def code(self) -> str:
        return "sign_in_failed"


@dataclass(frozen=True, slots=True)
class IdentityClaims:
    kind: IdentityKind
    issuer: str
    subject: str
    email: str = ""
    email_verified: bool = False
    name: str = ""
    groups: tuple[str, ...] = ()
    company: dict[str, Any] | None = None


def sign_in_identity(session: Session, *, claims: IdentityClaims, access: Any = None) -> User:
    """The user behind an identity: found, linked to an account by *verified* email, or created.

    `access` (portal Access settings) maps OIDC sign-ins to staff roles by email, domain or group.
    """
    from app.organisations import service as organisations

    if not claims.subject:
        raise SignInFailed("The sign-in service did not say who you are. Please try again.")
    email = normalise_email(claims.email) if claims.email else ""
    identity = session.scalar(
        select(Identity).where(Identity.kind == claims.kind, Identity.issuer == claims.issuer,
                               Identity.subject == claims.subject)
    )
    if identity is not None:
        user = session.get(User, identity.user_id)
        assert user is not None
    else:
        if not email:
            raise SignInFailed("The sign-in service did not share your email address, which this portal "
                               "needs. Allow it to share your email, or sign in with an email link.")
        user = get_user_by_email(session, email)
        if user is not None and not claims.email_verified:
            raise SignInFailed("An account with this email address already exists, and the sign-in service "
                               "did not confirm that the address is yours. Sign in the way you did before, "
                               "or with an email link.")
        if user is None:
            user = User(email=validate_email(email), role=Role.customer, display_name=claims.name.strip()[:120])
            session.add(user)
            session.flush()
        identity = Identity(user_id=user.id, kind=claims.kind, issuer=claims.issuer, subject=claims.subject)
        session.add(identity)
    if not user.is_active or user.deleted_at is not None:
        raise SignInFailed("This account is disabled. Contact the product team if you think this is a mistake.")
    identity.email = email or identity.email
    identity.last_used_at = utcnow()
    if claims.name and not user.display_name:
        user.display_name = claims.name.strip()[:120]

    if claims.company:
        organisation = organisations.upsert_from_company(session, claims.company)
        if organisation is not None:
            user.organisation_id = organisation.id
    elif user.organisation_id is None and claims.email_verified and email == user.email:
        organisation = organisations.find_by_email_domain(session, email)
        if organisation is not None:
            user.organisation_id = organisation.id

    if access is not None and claims.kind is IdentityKind.oidc:
        _apply_staff_mapping(session, user=user, email=email or user.email, groups=claims.groups, access=access)
    session.flush()
    return user


def _apply_staff_mapping(session: Session, *, user: User, email: str, groups: Sequence[str], access: Any) -> None:
    """Staff roles from the admin's mapping. People with a local password keep the role they were given."""
    mapped = access.staff_role_for(email=email, groups=groups)
    new_role = Role(mapped) if mapped else (user.role if user.password_hash else Role.customer)
    if new_role is not user.role:
        audit.record(session, actor=None, action="user.role_mapped", entity=user,
                     changes={"role": [user.role.value, new_role.value]})
        user.role = new_role
