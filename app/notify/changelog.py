"""The changelog by email: who gets a published entry, how a visitor subscribes, and the fan-out job.

Decided here (docs/architecture.md, "Notifications", has the summary):

* **Overall, not per product.** A subscription is to the portal's changelog as a whole: an entry may be about
  several products or none, and the people who asked for it are customers of the company, not of one board.
  The Atom feeds stay per product for those who want one board only.
* **Signed-in people** choose it like every other kind of email (`EventKind.changelog`: right away, in the
  weekly digest, never), on /me, on the emails' preferences page, or with the Subscribe button of the
  changelog pages. Unlike the other kinds it is opt-in: no choice recorded means never.
* **Visitors** give an address; the portal emails that address a signed link (HMAC over the address and the
  moment it was asked for, valid `CONFIRM_HOURS`) and stores nothing until the link is used, so a form
  filled in with someone else's address costs them one email and subscribes nobody. The answer on the page
  is the same whatever the address (unknown, subscribed, an account's) and the requests are rate-limited per
  address and per network. A link made before the address's latest confirmation or unsubscription is void:
  each link works once. Every changelog email carries a one-click unsubscribe (RFC 8058) signed for that
  subscriber; it works without an account or a session.
* **What is sent**: an entry as a signed-out visitor sees it (like the Atom feed): an entry holding only
  customer-only or internal items is not emailed, and an entry lists only its public items. A private portal
  (private mode) emails signed-in people only.
* **When**: publishing an entry (now, or at its scheduled time) enqueues one job in the same transaction;
  the worker runs it: a batch of `BATCH` recipients per job, accounts first, then confirmed visitors, one
  email per address and entry (its key: an address that is both an account's and a visitor's gets one).
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from pydantic import AfterValidator
from sqlalchemy import select
from sqlalchemy.orm import Session

from app import outbox
from app.accounts.models import User
from app.accounts.viewer import ANONYMOUS
from app.addresses import validate_email
from app.changelog import service as changelog
from app.changelog.models import ChangelogEntry
from app.config import Settings
from app.db import insert_with_conflicts, utcnow
from app.errors import FormInvalid, NotFound
from app.forms import FormModel, refuse, text
from app.markup import render_markdown
from app.notify import service as notify
from app.notify.models import ChangelogSubscriber, Delivery, DigestEntry, EventKind, NotificationPreference
from app.outbox import service as outbox_service
from app.portal import service as portal

CONFIRM = "changelog-confirm"
UNSUBSCRIBE = "changelog-unsubscribe"
CONFIRM_HOURS = 48
BATCH = 500


# --- signed links -----------------------------------------------------------------------------------------


def _b64(email: str) -> str:
    return base64.urlsafe_b64encode(email.encode()).rstrip(b"=").decode()


def _unb64(value: str) -> str | None:
    try:
        return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return None


def confirm_token(secret: str, *, email: str, asked_at: datetime) -> str:
    """`<seconds since the epoch>.<address, base64url>.<mac>`: notify.sign with the moment as its number. Whole
    seconds, rounded down: a link asked for in the second its address was confirmed is void (the safe side)."""
    moment = int(asked_at.timestamp())
    return notify.sign(secret, purpose=CONFIRM, user_id=moment, scope=_b64(email))


def confirm_url(settings: Settings, *, email: str, asked_at: datetime) -> str:
    return f"{settings.base_url}/changelog-subscription/{confirm_token(settings.secret_key, email=email, asked_at=asked_at)}"


@dataclass(frozen=True, slots=True)
class Confirmation:
    email: str
    asked_at: datetime


def read_confirmation(session: Session, *, secret: str, token: str, now: datetime | None = None) -> Confirmation | None:
    """The address a confirmation link was made for, while it can still be used: signed by this portal, less
    than CONFIRM_HOURS old, and made after the address was last confirmed or unsubscribed (used links are void)."""
    if len(token) > 1000:
        return None
    signed = notify.verify(secret, purpose=CONFIRM, token=token)
    if signed is None:
        return None
    email = _unb64(signed.scope)
    if email is None:
        return None
    asked_at = datetime.fromtimestamp(signed.user_id, tz=UTC)
    now = now or utcnow()
    if not now - timedelta(hours=CONFIRM_HOURS) <= asked_at <= now + timedelta(minutes=5):
        return None
    row = session.scalar(select(ChangelogSubscriber).where(ChangelogSubscriber.email == email))
    if row is not None and any(moment is not None and moment >= asked_at
                               for moment in (row.confirmed_at, row.unsubscribed_at)):
        return None
    return Confirmation(email=email, asked_at=asked_at)


def unsubscribe_url(settings: Settings, *, subscriber_id: int) -> str:
    token = notify.sign(settings.secret_key, purpose=UNSUBSCRIBE, user_id=subscriber_id, scope="changelog")
    return f"{settings.base_url}/unsubscribe/changelog/{token}"


def subscriber_of(session: Session, *, secret: str, token: str) -> ChangelogSubscriber | None:
    """The subscriber an unsubscribe link was signed for (subscribed or not any more: doing it twice is fine)."""
    if len(token) > 200:
        return None
    signed = notify.verify(secret, purpose=UNSUBSCRIBE, token=token)
    if signed is None or signed.scope != "changelog":
        return None
    return session.get(ChangelogSubscriber, signed.user_id)


# --- visitors -------------------------------------------------------------------------------------------


def _address(value: str) -> str:
    try:
        return validate_email(value)
    except FormInvalid as exc:
        raise refuse(next(iter(exc.errors.values()))) from None


class SubscribeRequest(FormModel):
    """The changelog page's "Get new entries by email" form, for visitors."""

    email: Annotated[str, text(320, required="Enter your email address."), AfterValidator(_address)] = ""


def ask_to_confirm(session: Session, *, settings: Settings, email: str) -> None:
    """Email `email` a link to confirm (through the outbox, in the caller's transaction). The same whatever the
    address: subscribed already or not, an account's or not (the page must not tell them apart)."""
    asked_at = utcnow()
    branding = portal.get_branding(session)
    context = {"portal_name": branding.portal_name, "accent": branding.accent_color,
               "link": confirm_url(settings, email=email, asked_at=asked_at), "hours": CONFIRM_HOURS,
               "changelog_url": f"{settings.base_url}/changelog"}
    token = confirm_token(settings.secret_key, email=email, asked_at=asked_at)
    outbox_service.enqueue_email(session, to=email, template="changelog_confirm", context=context,
                                 key=f"changelog_confirm:{token.rsplit('.', 1)[1][:32]}")


def confirm(session: Session, confirmation: Confirmation) -> None:
    """The owner of the address clicked: from now on it gets the changelog."""
    now = utcnow()
    session.execute(
        insert_with_conflicts(session.get_bind().dialect.name, ChangelogSubscriber)
        .values(email=confirmation.email, confirmed_at=now, created_at=now)
        .on_conflict_do_update(index_elements=["email"], set_={"confirmed_at": now})
    )


def unsubscribe(session: Session, subscriber: ChangelogSubscriber) -> None:
    if subscriber.confirmed_at is not None:
        subscriber.confirmed_at = None
        subscriber.unsubscribed_at = utcnow()
        session.flush()


def is_subscribed(session: Session, *, email: str) -> bool:
    return session.scalar(select(ChangelogSubscriber.id).where(ChangelogSubscriber.email == email,
                                                               ChangelogSubscriber.confirmed_at.is_not(None))) is not None


# --- signed-in people -----------------------------------------------------------------------------------


def choice_of(session: Session, *, user: User) -> Delivery:
    return notify.get_preferences(session, user=user)[EventKind.changelog]


def choose(session: Session, *, user: User, delivery: Delivery) -> None:
    notify.set_preferences(session, user=user, choices={EventKind.changelog: delivery})


# --- the fan-out (worker) -------------------------------------------------------------------------------


def _absolute(settings: Settings, path: str) -> str:
    return f"{settings.base_url}{path}"


def _people(session: Session, after: int) -> list[tuple[int, str, str, str]]:
    """Accounts that chose the changelog (right away or weekly), by id."""
    rows = session.execute(
        select(User.id, User.email, User.display_name, NotificationPreference.delivery)
        .join(NotificationPreference, (NotificationPreference.user_id == User.id)
              & (NotificationPreference.kind == EventKind.changelog))
        .where(NotificationPreference.delivery != Delivery.never, User.is_active.is_(True),
               User.deleted_at.is_(None), User.id > after)
        .order_by(User.id).limit(BATCH)).all()
    return [(r[0], r[1], r[2] or r[1].split("@", 1)[0], str(getattr(r[3], "value", r[3]))) for r in rows]


def _visitors(session: Session, after: int) -> list[tuple[int, str]]:
    rows = session.execute(select(ChangelogSubscriber.id, ChangelogSubscriber.email)
                           .where(ChangelogSubscriber.confirmed_at.is_not(None), ChangelogSubscriber.id > after)
                           .order_by(ChangelogSubscriber.id).limit(BATCH)).all()
    return [(r[0], r[1]) for r in rows]


def fan_out(session: Session, payload: dict[str, Any], *, settings: Settings) -> int:
    """One batch of an entry's recipients: an email each (a digest entry for the weekly ones), and the next
    batch as a job of its own. Nothing when the entry is gone, unpublished, moved to another time, or shows
    nothing to a signed-out visitor. Returns how many people this batch reached."""
    entry = session.get(ChangelogEntry, int(payload["entry_id"]))
    now = utcnow()
    if entry is None or entry.published_at is None or entry.published_at > now + timedelta(seconds=1):
        return 0
    if changelog.iso(entry.published_at) != payload.get("published_at"):
        return 0  # rescheduled: the job for the new time sends it
    try:
        release = changelog.get_release(session, ANONYMOUS, entry.public_id)
    except NotFound:
        return 0
    branding = portal.get_branding(session)
    headline = f"New on the changelog: {release.title}"
    common = {
        "portal_name": branding.portal_name, "accent": branding.accent_color, "headline": headline,
        "unsubscribe_label": "Stop changelog emails",
        "title": release.title, "notes": release.notes,
        "notes_html": str(render_markdown(release.notes, base_url=settings.base_url)) if release.notes else "",
        "entry_url": _absolute(settings, release.path), "changelog_url": _absolute(settings, "/changelog"),
        "items": [{"title": i.title, "summary": i.summary, "url": _absolute(settings, i.path)} for i in release.items],
    }
    phase, after = payload.get("phase", "people"), int(payload.get("after", 0))
    emails: list[outbox_service.Email] = []
    digest: list[dict[str, Any]] = []
    last = 0
    count = 0
    if phase == "people":
        people = _people(session, after)
        for user_id, email, name, delivery in people:
            if delivery == Delivery.weekly.value:
                digest.append({"user_id": user_id, "item_id": None, "kind": EventKind.changelog,
                               "event_key": f"changelog:{entry.public_id}", "created_at": now,
                               "summary": {"headline": headline, "path": release.path, "text": release.notes[:1000],
                                           "text_label": ""}})
                continue
            unsubscribe = notify.unsubscribe_url(settings, user_id=user_id, scope=f"k-{EventKind.changelog.value}")
            emails.append(_email(entry, email, {**common, "name": name, "unsubscribe_url": unsubscribe,
                                                "preferences_url": notify.preferences_url(settings, user_id=user_id)},
                                 unsubscribe))
        count, last = len(people), (people[-1][0] if people else 0)
        if len(people) < BATCH:
            phase, after = "visitors", 0
    if phase == "visitors" and portal.get_access(session).private_mode:
        phase = "done"  # a private portal's changelog is for signed-in people only
    if phase == "visitors":
        visitors = _visitors(session, after)
        for subscriber_id, email in visitors:
            unsubscribe = unsubscribe_url(settings, subscriber_id=subscriber_id)
            # A visitor has no account, so no preferences page: the email says so, and unsubscribing is all.
            emails.append(_email(entry, email, {**common, "name": "", "unsubscribe_url": unsubscribe,
                                                "preferences_url": "", "visitor": True}, unsubscribe))
        count, last = count + len(visitors), (visitors[-1][0] if visitors else 0)
        if len(visitors) < BATCH:
            phase = "done"
    outbox_service.enqueue_emails(session, emails)
    if digest:
        session.execute(insert_with_conflicts(session.get_bind().dialect.name, DigestEntry)
                        .on_conflict_do_nothing(index_elements=["user_id", "event_key"]), digest)
        notify.schedule_digest(session)
    if phase in ("people", "visitors"):
        outbox_service.enqueue(session, changelog.MAIL_JOB, {**payload, "phase": phase, "after": last},
                               key=f"{changelog.MAIL_JOB}:{entry.public_id}:{payload.get('published_at')}:{phase}:{last}")
    return count


def _email(entry: ChangelogEntry, to: str, context: dict[str, Any], unsubscribe: str) -> outbox_service.Email:
    # One per address and entry, whichever list the address is on (and whichever time the job runs).
    return outbox_service.Email(to=to, template="changelog", context=context,
                                key=f"changelog:{entry.public_id}:{to.lower()}",
                                headers=notify.list_unsubscribe_headers(unsubscribe))


@outbox.handler(changelog.MAIL_JOB)
def _fan_out_job(session: Session, job: outbox.Job) -> None:
    fan_out(session, job.payload, settings=notify.job_settings())
