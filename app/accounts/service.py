"""Users, passwords, sessions and staff invitations. All SQL of the accounts domain lives here."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, ClassVar, cast

from pydantic import AfterValidator, BeforeValidator, model_validator
from sqlalchemy import CursorResult, bindparam, delete, func, select, update
from sqlalchemy.orm import Session, joinedload

from app.accounts import tokens
from app.accounts.models import (
    STAFF_ROLES,
    Identity,
    IdentityKind,
    Invitation,
    MagicLink,
    Role,
    UsedToken,
    User,
    UserSession,
)
from app.addresses import normalise_email, validate_email
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.db import insert_with_conflicts, utcnow
from app.errors import AppError, Conflict, FormInvalid, NotFound
from app.forms import FormModel, refuse, return_path, text
from app.organisations import service as organisations
from app.organisations.models import Organisation, Segment
from app.parsing import clean_identity_claims

MIN_PASSWORD_LENGTH = 10
INVITATION_DAYS = 7


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def check_password_strength(password: str, *, field: str = "password") -> None:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise FormInvalid({field: f"Use at least {MIN_PASSWORD_LENGTH} characters."})
    if len(password) > 1024:
        raise FormInvalid({field: "That password is too long (1024 characters at most)."})


class PasswordSignIn(FormModel):
    """The password sign-in form (/login). No message per field: a wrong or unknown address, or a wrong password,
    gets the one LOGIN_FAILED answer, so nobody learns which accounts exist. The password is taken as typed."""

    email: Annotated[str, AfterValidator(normalise_email)] = ""
    password: str = ""
    next: Annotated[str, return_path()] = ""


_DIFFERENT = object()  # what confirm_password becomes when it is not the password typed above it


def _strong(value: str) -> str:
    try:
        check_password_strength(value)
    except FormInvalid as exc:
        raise refuse(exc.errors["password"]) from None
    return value


def _confirmed(value: Any) -> Any:
    if value is _DIFFERENT:
        raise refuse("The two passwords differ.")
    return value


class _NewPassword(FormModel):
    """A new password typed twice: its strength on the password's field, a difference on confirm_password's
    (both at once when both are wrong). Passwords are taken as typed, never stripped."""

    password_field: ClassVar[str] = "password"

    @model_validator(mode="before")
    @classmethod
    def _compare(cls, values: Any) -> Any:
        if isinstance(values, dict) and values.get(cls.password_field, "") != values.get("confirm_password", ""):
            values = {**values, "confirm_password": _DIFFERENT}
        return values


class PasswordChange(_NewPassword):
    """Changing one's own password (/account/password); the current one is checked by the route (argon2)."""

    password_field: ClassVar[str] = "new_password"

    current_password: str = ""
    new_password: Annotated[str, AfterValidator(_strong)] = ""
    confirm_password: Annotated[str, BeforeValidator(_confirmed)] = ""


class InvitationAccept(_NewPassword):
    """Accepting a staff invitation (/invitations/<token>): a name and a password."""

    display_name: str = ""
    password: Annotated[str, AfterValidator(_strong)] = ""
    confirm_password: Annotated[str, BeforeValidator(_confirmed)] = ""


def get_user_by_email(session: Session, email: str) -> User | None:
    return session.scalar(select(User).where(User.email == normalise_email(email)))


def get_user(session: Session, user_id: int) -> User:
    user = session.get(User, user_id)
    if user is None:
        raise NotFound()
    return user


def list_staff(session: Session) -> list[User]:
    return list(session.scalars(select(User).where(User.role.in_([Role.pm, Role.admin])).order_by(User.email)))


def find_password_account(session: Session, *, email: str) -> User | None:
    """The account a password sign-in with this email is for: active, not deleted, with a password.

    Checking the password itself is the caller's job (app/accounts/passwords.py), outside any transaction.
    """
    user = get_user_by_email(session, email)
    if user is None or not user.password_hash or not user.is_active or user.deleted_at is not None:
        return None
    return user


def create_user(
    session: Session, *, email: str, role: Role, password_hash: str | None = None, display_name: str = ""
) -> User:
    """A new account; `password_hash` comes ready from app/accounts/passwords.py (never hashed here, inside the
    transaction)."""
    email = validate_email(email)
    if get_user_by_email(session, email) is not None:
        raise Conflict(f"A user with the email {email} already exists.")
    user = User(email=email, role=role, display_name=display_name.strip()[:120], password_hash=password_hash)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, *, user: User, password_hash: str) -> None:
    """Set a new password (hashed by the caller) and end every session of the user (they sign in again)."""
    user.password_hash = password_hash
    end_all_sessions(session, user=user)


def change_password(session: Session, *, user: User, old_hash: str, new_hash: str) -> None:
    """The person's own change, once they proved the current password (whose hash was `old_hash`).

    Every session of theirs ends, the one they changed it from included: whoever else was signed in as them
    (perhaps with the old password) is out, and the caller starts a new session for this browser. If the
    password changed in between (another tab, an admin's reset), nothing is changed.
    """
    changed = cast(CursorResult[Any], session.execute(
        update(User).where(User.id == user.id, User.password_hash == old_hash).values(password_hash=new_hash)
        .execution_options(synchronize_session=False)
    )).rowcount
    if not changed:
        raise Conflict("Your password was changed elsewhere a moment ago. Sign in again and retry if needed.")
    session.refresh(user)
    end_all_sessions(session, user=user)
    audit.record(session, actor=user, action=AuditAction.user_password_changed, entity=user)


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


# Every signed-in request runs it: built once (the digest is a bound parameter), not per request.
_SESSION_BY_ID = (
    select(UserSession)
    .options(joinedload(UserSession.user).joinedload(User.organisation))
    .where(UserSession.id == bindparam("session_id"))
)


def load_session(session: Session, token: str) -> UserSession | None:
    if not token or len(token) > 100:
        return None
    row = session.scalar(_SESSION_BY_ID, {"session_id": _digest(token)})
    # No person: deleted by hand where foreign keys were off (SQLite's shell), their sessions left behind.
    if row is None or row.expires_at <= utcnow() or row.user is None or not row.user.is_active:
        return None
    return row


# The same lookup as columns (no ORM objects): for the pages answered before the stack, which keep the viewer
# they make from it for as long as the row reads the same (app/deps.py SignedInViewers).
_SESSION_COLUMNS = (
    select(UserSession.id, UserSession.user_id, UserSession.expires_at, User.display_name, User.email, User.role, User.is_active,
           User.organisation_id, Organisation.segment_id)
    .join(User, User.id == UserSession.user_id)
    .outerjoin(Organisation, Organisation.id == User.organisation_id)
    .where(UserSession.id == bindparam("session_id"))
)


def session_columns(session: Session, token: str) -> tuple[Any, ...] | None:
    """What `load_session` checks and a viewer needs of a session, as one row of plain values: (session id, user id, expiry,
    display name, email, role, active, organisation id, segment id), after the session's id; None when `load_session` would say no one."""
    if not token or len(token) > 100:
        return None
    row = session.execute(_SESSION_COLUMNS, {"session_id": _digest(token)}).one_or_none()
    if row is None or row.expires_at <= utcnow() or not row.is_active:
        return None
    return tuple(row)


def end_session(session: Session, token: str) -> None:
    session.execute(delete(UserSession).where(UserSession.id == _digest(token)))


def end_all_sessions(session: Session, *, user: User) -> None:
    session.execute(delete(UserSession).where(UserSession.user_id == user.id))


def list_sessions(session: Session, *, user: User) -> list[UserSession]:
    """The user's sessions that have not expired (browsers signed in now), newest first."""
    return list(session.scalars(
        select(UserSession).where(UserSession.user_id == user.id, UserSession.expires_at > utcnow())
        .order_by(UserSession.created_at.desc())
    ))


def _give_role(session: Session, user: User, role: Role) -> None:
    """A new role ends every session of the person: a session opened as a customer (by host-app SSO or an email
    link, which staff may not use) must not become a staff session when the account is promoted, and a
    demoted person's open pages must not keep staff rights either. Whoever changes the role signs in again."""
    if user.role is role:
        return
    user.role = role
    if user.id is not None:
        end_all_sessions(session, user=user)
        if role not in STAFF_ROLES:
            tokens.revoke_all_for(session, user=user)


# --- invitations ----------------------------------------------------------------------------------


_STAFF_ROLE = "Choose product manager or admin."


def _staff_role(value: Any) -> Role:
    if value in (Role.pm, Role.admin, Role.pm.value, Role.admin.value):
        return Role(value)
    raise refuse(_STAFF_ROLE)


def _email(value: str) -> str:
    try:
        return validate_email(value)
    except FormInvalid as exc:
        raise refuse(exc.errors["email"]) from None


class StaffInvite(FormModel):
    """Inviting a new PM or admin."""

    email: Annotated[str, text(320), AfterValidator(_email)] = ""
    role: Annotated[Role, BeforeValidator(_staff_role)] = Role.pm


class MagicLinkRequest(FormModel):
    """Asking for a sign-in link by email (/login/email); `next` is where the link leads after signing in."""

    link_email: Annotated[str, text(320), AfterValidator(_email)] = ""
    next: Annotated[str, return_path()] = ""


class StaffRoleChange(FormModel):
    role: Annotated[Role, BeforeValidator(_staff_role)] = Role.pm


ACTIVE_MESSAGE = "Choose to enable or disable the account."


def _enable_or_disable(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if value in ("1", "0"):
        return value == "1"
    raise refuse(ACTIVE_MESSAGE)


class AccountActive(FormModel):
    """The Enable / Disable button of an account (staff or customer): `active` "1" enables it, "0" disables it;
    anything else is refused rather than read as "disable"."""

    active: Annotated[bool, BeforeValidator(_enable_or_disable)] = False


def invite_staff(session: Session, *, email: str, role: Role, invited_by: User) -> tuple[Invitation, str]:
    """An invitation for a new PM or admin; returns it with the raw token for the link."""
    if role not in (Role.pm, Role.admin):
        raise FormInvalid({"role": _STAFF_ROLE})
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
        session, actor=invited_by, action=AuditAction.invitation_created, entity=invitation,
        label=email, changes={"role": [None, role.value]},
    )
    return invitation, token


INVITATION_GONE = ("This invitation is no longer valid: it was used, cancelled or has expired. "
                   "Ask an admin to send a new one.")


def find_invitation(session: Session, token: str) -> Invitation:
    invitation = session.scalar(select(Invitation).where(Invitation.token_hash == _digest(token)))
    if invitation is None or invitation.accepted_at is not None or invitation.expires_at <= utcnow():
        raise NotFound(INVITATION_GONE)
    return invitation


def accept_invitation(session: Session, *, token: str, display_name: str, password_hash: str) -> User:
    """The invitee's account with their role and password (checked and hashed by the caller)."""
    invitation = find_invitation(session, token)
    # Claimed with a conditional write, so an admin cancelling it (or a second tab accepting it) at the
    # same moment cannot both win.
    claimed = cast(CursorResult[Any], session.execute(
        update(Invitation).where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .values(accepted_at=utcnow())
    )).rowcount
    if not claimed:
        raise NotFound(INVITATION_GONE)
    user = get_user_by_email(session, invitation.email)
    if user is None:
        user = User(email=invitation.email, role=invitation.role)
        session.add(user)
    else:
        _give_role(session, user, invitation.role)
        user.is_active = True
    user.display_name = display_name.strip()[:120]
    user.password_hash = password_hash
    session.flush()
    audit.record(
        session, actor=user, action=AuditAction.invitation_accepted, entity=user,
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


def cancel_invitation(session: Session, *, invitation_id: int, actor: User) -> Invitation | None:
    """Withdraw an invitation that nobody accepted yet: its link stops working at once.

    Returns the cancelled invitation, or None when there is nothing left to cancel (already accepted
    or cancelled, perhaps by someone else a moment ago).
    """
    invitation = session.get(Invitation, invitation_id)
    if invitation is None or invitation.accepted_at is not None:
        return None
    gone = cast(CursorResult[Any], session.execute(
        delete(Invitation).where(Invitation.id == invitation.id, Invitation.accepted_at.is_(None))
        .execution_options(synchronize_session=False)
    )).rowcount
    session.expunge(invitation)
    if not gone:
        return None
    audit.record(session, actor=actor, action=AuditAction.invitation_cancelled, entity=invitation, label=invitation.email,
                 changes={"role": [invitation.role.value, None]})
    return invitation


def set_user_active(session: Session, *, user: User, active: bool, actor: User) -> None:
    """Disabling a user ends all of their sessions at once."""
    if user.id == actor.id and not active:
        raise FormInvalid({"user": "You cannot disable your own account."})
    before = user.is_active
    user.is_active = active
    if not active:
        end_all_sessions(session, user=user)
        tokens.revoke_all_for(session, user=user)
    audit.record(session, actor=actor, action=AuditAction.user_updated, entity=user, changes={"is_active": [before, active]})


def set_user_role(session: Session, *, user: User, role: Role, actor: User) -> None:
    if user.id == actor.id and role is not Role.admin:
        raise FormInvalid({"role": "You cannot remove your own admin role."})
    before = user.role
    if before is role:
        return
    _give_role(session, user, role)
    audit.record(session, actor=actor, action=AuditAction.user_updated, entity=user, changes={"role": [before.value, role.value]})


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


class StaffAccountRefused(SignInFailed):
    """A customer sign-in method reached a staff account: refused, nothing linked. The view says how staff sign
    in and logs it; `email` is the staff account's address."""

    status_code = 403
    title = "Staff sign in with their password"

    def __init__(self, *, email: str) -> None:
        super().__init__("This email address belongs to a staff account, which cannot be entered this way.")
        self.email = email

    @property
    def code(self) -> str:
        return "staff_account"


@dataclass(frozen=True, slots=True)
class _Resolved:
    identity: Identity | None
    user: User | None  # None: a new account would be made
    email: str
    mapped: Role | None  # the staff role the admin's OIDC mapping gives this sign-in


def _resolve_identity(session: Session, *, claims: IdentityClaims, access: Any) -> _Resolved:
    """Whose account an identity opens, without writing anything; raises what refuses it."""
    if not claims.subject:
        raise SignInFailed("The sign-in service did not say who you are. Please try again.")
    email = normalise_email(claims.email) if claims.email else ""
    identity = session.scalar(
        select(Identity).where(Identity.kind == claims.kind, Identity.issuer == claims.issuer,
                               Identity.subject == claims.subject)
    )
    if identity is not None:
        user: User | None = session.get(User, identity.user_id)
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
        if user is None and not claims.email_verified:
            # An account made from an unconfirmed address could later be entered by whoever set it
            # up once the real owner signs in by email link (account pre-hijacking): refuse it.
            raise SignInFailed("Your sign-in service did not confirm your email address, so no account can "
                               "be made with it. Sign in with an email link instead, or ask your "
                               "administrator to have the service confirm email addresses.")

    mapped: Role | None = None
    if access is not None and claims.kind is IdentityKind.oidc:
        # Email and domain rules count only for an address the provider vouches for; groups always do.
        staff_email = (email or (user.email if user is not None else "")) if claims.email_verified else ""
        role = access.staff_role_for(email=staff_email, groups=claims.groups)
        mapped = Role(role) if role else None
    if user is not None and user.is_staff_account and mapped is None:
        raise StaffAccountRefused(email=user.email)
    return _Resolved(identity=identity, user=user, email=email, mapped=mapped)


def find_identity_account(session: Session, *, claims: IdentityClaims, access: Any = None) -> User | None:
    """The account `sign_in_identity` would open (None: it would make a new one), changing nothing. Raises as it
    would: SignInFailed, StaffAccountRefused."""
    return _resolve_identity(session, claims=claims, access=access).user


def sign_in_identity(session: Session, *, claims: IdentityClaims, access: Any = None) -> User:
    """The user behind an identity: found, linked to an account by *verified* email, or created.

    `access` (portal Access settings) maps OIDC sign-ins to staff roles by email, domain or group. A staff
    account (PM or admin) is entered only through a provider whose mapping makes this sign-in staff: host-app
    SSO, email links and an unmapped provider raise StaffAccountRefused before anything is linked or changed.
    """
    claims = clean_identity_claims(claims)  # another system's JSON: a NUL in a name would be a 500
    resolved = _resolve_identity(session, claims=claims, access=access)
    identity, user, email, mapped = resolved.identity, resolved.user, resolved.email, resolved.mapped
    if user is None:
        user = User(email=validate_email(email), role=Role.customer, display_name=claims.name.strip()[:120])
        session.add(user)
        session.flush()
    if identity is None:
        identity = Identity(user_id=user.id, kind=claims.kind, issuer=claims.issuer, subject=claims.subject)
        session.add(identity)
    if user.is_placeholder:  # a contact recorded by staff, claimed by signing in with that (verified) address
        user.is_placeholder = False
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

    if mapped is not None and mapped is not user.role:
        # The admin's mapping decides the role of whoever it maps (a customer is refused above if unmapped).
        audit.record(session, actor=None, action=AuditAction.user_role_mapped, entity=user,
                     changes={"role": [user.role.value, mapped.value]})
        _give_role(session, user, mapped)
    session.flush()
    return user


# --- email magic links ----------------------------------------------------------------------------

MAGIC_LINK_MINUTES = 15


def magic_link_allowed(session: Session, *, email: str, private_mode: bool) -> bool:
    """Whether a link may be sent to this (normalised) address.

    Known accounts always get one. A new address is an open sign-up on a public portal; on a private
    portal only addresses of a known organisation's domain may create an account this way.
    """
    if get_user_by_email(session, email) is not None:
        return True
    return not private_mode or organisations.find_by_email_domain(session, email) is not None


def create_magic_link(session: Session, *, email: str, next_path: str = "/") -> str:
    """A single-use link for the address; returns the raw token (only its hash is stored)."""
    now = utcnow()
    # Expired links are kept a day (so a support question about one can be answered), then removed.
    session.execute(delete(MagicLink).where(MagicLink.expires_at < now - timedelta(days=1)))
    token = secrets.token_urlsafe(32)
    session.add(MagicLink(token_hash=_digest(token), email=normalise_email(email), next_path=next_path[:2000],
                          created_at=now, expires_at=now + timedelta(minutes=MAGIC_LINK_MINUTES)))
    session.flush()
    return token


def find_magic_link(session: Session, token: str) -> MagicLink | None:
    """The link if it can still be used (not used, not expired); reading it does not use it up."""
    if not token or len(token) > 100:
        return None
    return session.scalar(
        select(MagicLink).where(MagicLink.token_hash == _digest(token), MagicLink.used_at.is_(None),
                                MagicLink.expires_at > utcnow())
    )


def consume_magic_link(session: Session, *, token: str) -> MagicLink | None:
    """Use the link up, exactly once: of two simultaneous requests only one gets it; None if unusable."""
    if not token or len(token) > 100:
        return None
    now = utcnow()
    result = cast(CursorResult[Any], session.execute(
        update(MagicLink)
        .where(MagicLink.token_hash == _digest(token), MagicLink.used_at.is_(None), MagicLink.expires_at > now)
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    ))
    if result.rowcount != 1:
        return None
    return session.scalar(select(MagicLink).where(MagicLink.token_hash == _digest(token)))


# --- single-use token ids (host-app SSO `jti`) -----------------------------------------------------------


def use_token_id(session: Session, *, key: str, expires_at: datetime) -> bool:
    """Record a token id as used; False when it already was (a replay). Safe under concurrency: the
    primary key decides, and ON CONFLICT DO NOTHING keeps the request's transaction usable."""
    now = utcnow()
    session.execute(delete(UsedToken).where(UsedToken.expires_at < now))
    inserted = session.scalar(
        insert_with_conflicts(session.get_bind().dialect.name, UsedToken)
        .values(jti=key[:200], expires_at=expires_at).on_conflict_do_nothing(index_elements=["jti"]).returning(UsedToken.jti)
    )
    return inserted is not None


# --- the person's own account: profile, data export, deletion --------------------------------------------

DELETED_NAME = "Deleted user"
DELETED_EMAIL_DOMAIN = "deleted.invalid"
MAX_DISPLAY_NAME = 120
CONFIRM_EMAIL = "Type your email address exactly as shown to confirm."
EXPORT_FORMAT = "ahead.personal-data/1"


@dataclass(frozen=True, slots=True)
class Profile:
    user: User
    organisation: Organisation | None
    segment: Segment | None
    identities: list[Identity]


def list_identities(session: Session, *, user: User) -> list[Identity]:
    return list(session.scalars(
        select(Identity).where(Identity.user_id == user.id).order_by(Identity.created_at, Identity.id)
    ))


def get_profile(session: Session, *, user: User) -> Profile:
    organisation = session.get(Organisation, user.organisation_id) if user.organisation_id else None
    segment = (session.get(Segment, organisation.segment_id)
               if organisation is not None and organisation.segment_id else None)
    return Profile(user=user, organisation=organisation, segment=segment,
                   identities=list_identities(session, user=user))


class ProfileUpdate(FormModel):
    """The person's own details on /me."""

    display_name: Annotated[str, text(MAX_DISPLAY_NAME, required="Enter your name.", collapse=True)] = ""


class AccountDelete(FormModel):
    """Deleting one's own account: the email address typed again (checked against the account's)."""

    confirm_email: Annotated[str, text(320, required=CONFIRM_EMAIL)] = ""


def update_display_name(session: Session, *, user: User, data: ProfileUpdate) -> None:
    name = data.display_name
    before = user.display_name
    if name == before:
        return
    user.display_name = name
    session.flush()
    audit.record(session, actor=user, action=AuditAction.user_updated, entity=user, changes={"display_name": [before, name]})


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None


def export_personal_data(session: Session, *, user: User) -> dict[str, Any]:
    """Everything the portal holds about the person, ready for JSON.

    One top-level key per kind of record; the domains that arrive later add theirs next to these
    (`votes`, `follows`, `comments`, `feedback`). Secrets never appear: no password or token hashes,
    no session ids.
    """
    profile = get_profile(session, user=user)
    sessions = session.scalars(
        select(UserSession).where(UserSession.user_id == user.id).order_by(UserSession.created_at)
    )
    links = session.scalars(select(MagicLink).where(MagicLink.email == user.email).order_by(MagicLink.created_at))
    return {
        "format": EXPORT_FORMAT,
        "exported_at": _iso(utcnow()),
        "profile": {
            "email": user.email,
            "display_name": user.display_name,
            "role": user.role.value,
            "has_password": bool(user.password_hash),
            "created_at": _iso(user.created_at),
            "last_login_at": _iso(user.last_login_at),
        },
        "organisation": None if profile.organisation is None else {
            "name": profile.organisation.name,
            "segment": profile.segment.name if profile.segment is not None else None,
        },
        "identities": [
            {"kind": i.kind.value, "issuer": i.issuer, "subject": i.subject, "email": i.email,
             "created_at": _iso(i.created_at), "last_used_at": _iso(i.last_used_at)}
            for i in profile.identities
        ],
        "sessions": [
            {"created_at": _iso(s.created_at), "expires_at": _iso(s.expires_at), "user_agent": s.user_agent}
            for s in sessions
        ],
        "sign_in_links": [
            {"requested_at": _iso(m.created_at), "expires_at": _iso(m.expires_at), "used_at": _iso(m.used_at)}
            for m in links
        ],
        "audit_events": [
            {"at": _iso(e.created_at), "action": e.action, "record_type": e.entity_type,
             "record": e.entity_label, "changes": e.changes}
            for e in audit.list_events_by_actor(session, actor_id=user.id)
        ],
    }


def count_active_admins(session: Session, *, excluding: User | None = None) -> int:
    stmt = select(func.count()).select_from(User).where(
        User.role == Role.admin, User.is_active.is_(True), User.deleted_at.is_(None)
    )
    if excluding is not None:
        stmt = stmt.where(User.id != excluding.id)
    return session.scalar(stmt) or 0


def _deleted_email(session: Session) -> str:
    while True:
        candidate = f"deleted-{secrets.token_hex(8)}@{DELETED_EMAIL_DOMAIN}"
        if get_user_by_email(session, candidate) is None:
            return candidate


def delete_account(session: Session, *, user: User, confirm_email: str) -> None:
    """Erase who the person is; keep an anonymous user row so what they did still adds up.

    See app/accounts/me.py for what stays and why. `confirm_email` must be their email address.
    """
    if normalise_email(confirm_email) != user.email:
        raise FormInvalid({"confirm_email": CONFIRM_EMAIL})
    if user.role is Role.admin and count_active_admins(session, excluding=user) == 0:
        raise Conflict("You are the only admin of this portal, so your account cannot be deleted: no one "
                       "would be left to manage it. Make someone else an admin first, then delete your account.")
    old_email, old_role = user.email, user.role
    placeholder = _deleted_email(session)
    session.execute(delete(Identity).where(Identity.user_id == user.id))
    end_all_sessions(session, user=user)
    tokens.revoke_all_for(session, user=user)
    session.execute(delete(MagicLink).where(MagicLink.email == old_email))
    session.execute(delete(Invitation).where(Invitation.email == old_email))
    user.email = placeholder
    user.display_name = DELETED_NAME
    user.password_hash = None
    user.organisation_id = None
    user.role = Role.customer
    user.is_active = False
    user.last_login_at = None
    user.deleted_at = utcnow()
    session.flush()
    audit.anonymise_person(session, user_id=user.id, email=old_email, actor_label=placeholder,
                           entity_label=DELETED_NAME)
    changes: dict[str, list[Any]] = {"deleted": [False, True]}
    if old_role is not Role.customer:
        changes["role"] = [old_role.value, Role.customer.value]
    audit.record(session, actor=user, action=AuditAction.user_deleted, entity=user, label=DELETED_NAME, changes=changes)
