"""Who is told what, and how: events, their recipients, preferences, the weekly digest, unsubscribing.

Decided here (docs/architecture.md has the summary):

* A change that people hear about (a stage move, a release, a decline, an official answer, a reply, what
  became of an idea) is announced in the request's own transaction as ONE outbox job (`notify.fan_out`)
  carrying the event: item, kind, stage before and after, actor, the text that goes with it. Nothing is
  sent from the request, whatever the number of followers.
* The worker runs the fan-out: it reads the recipients a batch at a time (`BATCH` people, by user id),
  enqueues one email per person keyed (event, person) — or writes a digest entry for people who chose the
  weekly digest — and enqueues the next batch as a job of its own. A batch that runs twice enqueues
  nothing twice (the keys).
* Recipients of an item's event: its followers — people with a follow row, voters (votes captured for them
  included) and commenters — minus those who stopped following it, minus the person who made the change,
  minus disabled and deleted accounts, minus people who may not see the item (`visibility.readers_of`, the
  rule of `visible_items`), minus people whose preference for that kind of event is `never`. The count the
  staff forms show ("N people will be told") is the same query, counted.
* Unsubscribe links are signed, not stored: HMAC-SHA256 under a key derived from SECRET_KEY over
  (purpose, user id, scope), where the scope is an item or a kind of event. They do not expire (an old email's
  link must still work) and doing it twice is harmless. Changing SECRET_KEY voids them, like every other
  signature of the portal.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

from pydantic import BeforeValidator
from sqlalchemy import and_, exists, func, literal, or_, select, union, update
from sqlalchemy.orm import Session

from app import outbox
from app.accounts.models import User
from app.audit import service as audit
from app.audit.actions import AuditAction
from app.config import Settings, get_settings
from app.db import insert_with_conflicts, utcnow
from app.discussion.models import Comment
from app.forms import FormModel, choice, refuse, text
from app.markup import render_markdown
from app.notify.models import Delivery, DigestEntry, EventKind, NotificationPreference
from app.outbox import service as outbox_service
from app.portal import service as portal
from app.portal.models import PortalSetting
from app.roadmap.models import Item, Stage
from app.roadmap.visibility import readers_of
from app.voting import service as voting
from app.voting.models import Follow, Vote

FAN_OUT = "notify.fan_out"
DIGEST = "notify.digest"
BATCH = 500  # recipients per fan-out job
MAX_MESSAGE = 5000

KIND_LABELS = {
    EventKind.stage: "An item you follow moves to another stage",
    EventKind.released: "An item you follow is released",
    EventKind.declined: "An item you follow is declined",
    EventKind.answer: "The product team answers on an item you follow",
    EventKind.reply: "Someone replies to your comment",
    EventKind.idea: "What became of an idea you suggested",
    EventKind.changelog: "A new entry is published on the changelog",
}
DELIVERY_LABELS = {Delivery.immediately: "Right away", Delivery.weekly: "In a weekly digest",
                   Delivery.never: "Never"}
# What a person gets before choosing: everything about what they took part in; the changelog only on request.
DEFAULT_DELIVERY = {EventKind.changelog: Delivery.never}
FOLLOWER_KINDS = (EventKind.stage, EventKind.released, EventKind.declined, EventKind.answer)


# --- events -----------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One change people hear about, as the fan-out job carries it (JSON)."""

    kind: EventKind
    key: str  # unique per event: the emails' keys and the digest entries' are made from it
    item_id: int | None = None
    actor_id: int | None = None
    before: str = ""  # stage names, for stage / released / declined
    after: str = ""
    text: str = ""  # Markdown: release notes, the reason, the answer, the reply
    comment_ids: tuple[int, ...] = ()  # reply: the comments whose authors are told
    recipient_id: int | None = None  # idea: its author
    idea_title: str = ""

    def payload(self) -> dict[str, Any]:
        data = asdict(self)
        data["kind"] = self.kind.value
        data["comment_ids"] = list(self.comment_ids)
        return data

    @classmethod
    def of(cls, payload: dict[str, Any]) -> Event:
        known = {k: payload[k] for k in cls.__dataclass_fields__ if k in payload}
        known["kind"] = EventKind(known["kind"])
        known["comment_ids"] = tuple(known.get("comment_ids") or ())
        return cls(**known)


def stage_kind(stage: Stage) -> EventKind:
    """What a move to this stage is, for the people told."""
    if stage.is_released:
        return EventKind.released
    if stage.is_closed:
        return EventKind.declined
    return EventKind.stage


def announce(session: Session, event: Event) -> None:
    """Enqueue the event's fan-out in the caller's transaction: it happens if and only if the change commits."""
    outbox_service.enqueue(session, FAN_OUT, event.payload(), key=f"{FAN_OUT}:{event.key}")


def announce_move(session: Session, *, item: Item, old: Stage, new: Stage, actor: User | None, message: str = "",
                  change_id: int | str) -> None:
    """A stage move: released items carry their release notes, other moves the PM's message (the reason).
    `actor` None: a move nobody made by hand (a tracker's webhook), so nobody is left out for making it."""
    kind = stage_kind(new)
    text = item.release_notes if kind is EventKind.released else message
    announce(session, Event(kind=kind, key=f"move:{item.id}:{change_id}", item_id=item.id,
                            actor_id=actor.id if actor is not None else None,
                            before=old.name, after=new.name, text=text))


def announce_answer(session: Session, *, comment: Comment, actor: User) -> None:
    announce(session, Event(kind=EventKind.answer, key=f"answer:{comment.id}", item_id=comment.item_id,
                            actor_id=actor.id, text=comment.body))


def announce_reply(session: Session, *, comment: Comment, replied_to: Sequence[int], actor: User) -> None:
    """A reply: the authors of the comments it answers hear of it (the named one and the thread's first)."""
    announce(session, Event(kind=EventKind.reply, key=f"reply:{comment.id}", item_id=comment.item_id,
                            actor_id=actor.id, text=comment.body, comment_ids=tuple(sorted(set(replied_to)))))


def announce_idea(session: Session, *, feedback_id: int, author_id: int | None, title: str, actor: User,
                  outcome: str, item: Item | None = None, reason: str = "") -> None:
    """What became of an idea: `outcome` is "linked" (to `item`) or "declined" (with `reason`)."""
    if author_id is None:
        return
    announce(session, Event(kind=EventKind.idea, key=f"idea:{feedback_id}:{outcome}:{utcnow().timestamp():.0f}",
                            item_id=item.id if item is not None else None, actor_id=actor.id,
                            after=outcome, text=reason, recipient_id=author_id, idea_title=title))


# --- recipients -------------------------------------------------------------------------------------------


def _stopped(item_id: int) -> Any:
    return exists().where(Follow.item_id == item_id, Follow.user_id == User.id, Follow.stopped_at.is_not(None))


def _candidates(event: Event) -> Any:
    """The user ids the event concerns, before anyone is taken out."""
    if event.kind is EventKind.idea:
        return select(literal(event.recipient_id or 0).label("user_id"))
    if event.kind is EventKind.reply:
        return select(Comment.author_id.label("user_id")).where(Comment.id.in_(event.comment_ids or (0,)),
                                                               Comment.author_id.is_not(None))
    item_id = event.item_id or 0
    return union(
        select(Follow.user_id).where(Follow.item_id == item_id, Follow.stopped_at.is_(None)),
        select(Vote.user_id).where(Vote.item_id == item_id),
        select(Comment.author_id).where(Comment.item_id == item_id, Comment.author_id.is_not(None)),
    )


def _concerned(event: Event, item: Item | None) -> Any:
    """Everyone the event concerns, whatever they chose (User rows); None when nobody can be."""
    wanted = _candidates(event).subquery()
    stmt = (select(User.id, User.email, User.display_name).join(wanted, wanted.c.user_id == User.id)
            .where(User.is_active.is_(True), User.deleted_at.is_(None)))
    if event.actor_id is not None:
        stmt = stmt.where(User.id != event.actor_id)
    if event.kind is EventKind.idea:
        return stmt  # the author hears what became of their idea, even when the item is not published yet
    if item is None:
        return None
    return stmt.where(readers_of(item), ~_stopped(item.id))


def recipients(event: Event, item: Item | None) -> Any:
    """(user id, email, name, delivery) of everyone to tell, by user id: the fan-out reads it a batch at a
    time, the staff forms count it."""
    stmt = _concerned(event, item)
    if stmt is None:
        return select(User.id, User.email, User.display_name, literal("never")).where(literal(False))
    chosen = and_(NotificationPreference.user_id == User.id, NotificationPreference.kind == event.kind)
    return (stmt.add_columns(func.coalesce(NotificationPreference.delivery, Delivery.immediately.value).label("delivery"))
            .outerjoin(NotificationPreference, chosen)
            .where(or_(NotificationPreference.delivery.is_(None), NotificationPreference.delivery != Delivery.never))
            .order_by(User.id))


def count_recipients(session: Session, event: Event, item: Item | None) -> int:
    return session.scalar(select(func.count()).select_from(recipients(event, item).order_by(None).subquery())) or 0


@dataclass(frozen=True, slots=True)
class Audience:
    """How many people a change on an item would reach, per kind (the stage form names each target's)."""

    per_kind: dict[EventKind, int]

    def for_stage(self, stage: Stage) -> int:
        return self.per_kind[stage_kind(stage)]


def audience_of(session: Session, *, item: Item, actor: User) -> Audience:
    """`count_recipients` for each kind an item's followers hear of, in two statements: everyone concerned,
    then those of them who chose "never", per kind."""
    concerned = _concerned(Event(kind=EventKind.stage, key="", item_id=item.id, actor_id=actor.id), item)
    if concerned is None:
        return Audience(per_kind=dict.fromkeys(FOLLOWER_KINDS, 0))
    people = concerned.with_only_columns(User.id).subquery()
    total = session.scalar(select(func.count()).select_from(people)) or 0
    never = dict(session.execute(
        select(NotificationPreference.kind, func.count())
        .where(NotificationPreference.user_id.in_(select(people.c.id)),
               NotificationPreference.delivery == Delivery.never, NotificationPreference.kind.in_(FOLLOWER_KINDS))
        .group_by(NotificationPreference.kind)).all())
    return Audience(per_kind={kind: total - never.get(kind, 0) for kind in FOLLOWER_KINDS})


def count_answer_audience(session: Session, *, item: Item, actor: User) -> int:
    return count_recipients(session, Event(kind=EventKind.answer, key="", item_id=item.id, actor_id=actor.id), item)


# --- signed links -----------------------------------------------------------------------------------------

UNSUBSCRIBE = "unsubscribe"
PREFERENCES = "preferences"


def _mac(secret: str, purpose: str, user_id: int, scope: str) -> str:
    key = hashlib.sha256(("notify-links:" + secret).encode()).digest()
    message = f"{len(purpose)}:{purpose}:{user_id}:{len(scope)}:{scope}".encode()
    return base64.urlsafe_b64encode(hmac.new(key, message, hashlib.sha256).digest()).rstrip(b"=").decode()


def sign(secret: str, *, purpose: str, user_id: int, scope: str) -> str:
    """`<user id>.<scope>.<mac>`; scope: `i-<item public id>`, `k-<kind>` or `all`."""
    return f"{user_id}.{scope}.{_mac(secret, purpose, user_id, scope)}"


@dataclass(frozen=True, slots=True)
class Signed:
    user_id: int
    scope: str


def verify(secret: str, *, purpose: str, token: str) -> Signed | None:
    """The (user, scope) a token was made for, or None when it was not made by this portal for `purpose`."""
    parts = token.split(".")
    if len(parts) != 3 or not parts[0].isascii() or not parts[0].isdigit() or len(parts[0]) > 12:
        return None
    user_id, scope, mac = int(parts[0]), parts[1], parts[2]
    if not hmac.compare_digest(_mac(secret, purpose, user_id, scope).encode(), mac.encode("utf-8", "replace")):
        return None
    return Signed(user_id=user_id, scope=scope)


def unsubscribe_url(settings: Settings, *, user_id: int, scope: str) -> str:
    return f"{settings.base_url}/unsubscribe/{sign(settings.secret_key, purpose=UNSUBSCRIBE, user_id=user_id, scope=scope)}"


def preferences_url(settings: Settings, *, user_id: int) -> str:
    return f"{settings.base_url}/email-preferences/{sign(settings.secret_key, purpose=PREFERENCES, user_id=user_id, scope='all')}"


def list_unsubscribe_headers(url: str) -> dict[str, str]:
    """RFC 8058 one-click unsubscribe (RFC 2369 List-Unsubscribe with an https URL, and the POST marker)."""
    return {"List-Unsubscribe": f"<{url}>", "List-Unsubscribe-Post": "List-Unsubscribe=One-Click"}


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """What a valid unsubscribe link stops: emails about one item, or one kind of email."""

    user: User
    item: Item | None = None
    kind: EventKind | None = None
    digest: bool = False  # the weekly digest: every kind sent weekly becomes never


def resolve_unsubscribe(session: Session, *, secret: str, token: str) -> Unsubscribe | None:
    signed = verify(secret, purpose=UNSUBSCRIBE, token=token)
    if signed is None:
        return None
    user = session.get(User, signed.user_id)
    if user is None:
        return None
    if signed.scope.startswith("i-"):
        item = session.scalar(select(Item).where(Item.public_id == signed.scope[2:]))
        return Unsubscribe(user=user, item=item) if item is not None else None
    if signed.scope == "k-digest":
        return Unsubscribe(user=user, digest=True)
    if signed.scope.startswith("k-"):
        try:
            return Unsubscribe(user=user, kind=EventKind(signed.scope[2:]))
        except ValueError:
            return None
    return None


def apply_unsubscribe(session: Session, target: Unsubscribe) -> None:
    if target.item is not None:
        voting.stop_following(session, item_id=target.item.id, user_id=target.user.id)
    elif target.kind is not None:
        set_preferences(session, user=target.user, choices={target.kind: Delivery.never})
    elif target.digest:
        weekly = [k for k, d in get_preferences(session, user=target.user).items() if d is Delivery.weekly]
        set_preferences(session, user=target.user, choices=dict.fromkeys(weekly, Delivery.never))


def resolve_preferences_token(session: Session, *, secret: str, token: str) -> User | None:
    signed = verify(secret, purpose=PREFERENCES, token=token)
    if signed is None or signed.scope != "all":
        return None
    user = session.get(User, signed.user_id)
    return user if user is not None and user.deleted_at is None else None


# --- preferences ------------------------------------------------------------------------------------------


def get_preferences(session: Session, *, user: User) -> dict[EventKind, Delivery]:
    rows = session.execute(select(NotificationPreference.kind, NotificationPreference.delivery)
                           .where(NotificationPreference.user_id == user.id)).all()
    chosen: dict[EventKind, Delivery] = dict(rows)  # (kind, delivery) rows
    return {kind: chosen.get(kind, DEFAULT_DELIVERY.get(kind, Delivery.immediately)) for kind in EventKind}


def set_preferences(session: Session, *, user: User, choices: dict[EventKind, Delivery]) -> None:
    now = utcnow()
    for kind, delivery in choices.items():
        session.execute(
            insert_with_conflicts(session.get_bind().dialect.name, NotificationPreference)
            .values(user_id=user.id, kind=kind, delivery=delivery, updated_at=now)
            .on_conflict_do_update(index_elements=["user_id", "kind"], set_={"delivery": delivery, "updated_at": now})
        )


class PreferencesUpdate(FormModel):
    """One choice per kind of event (a missing one: `immediately`, the changelog `never`)."""

    stage: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    released: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    declined: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    answer: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    reply: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    idea: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately
    changelog: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.",
                                          empty=Delivery.never)] = Delivery.never

    def choices(self) -> dict[EventKind, Delivery]:
        return {kind: getattr(self, kind.value) for kind in EventKind}


def preferences_context(session: Session, *, user: User) -> dict[str, Any]:
    """What the preferences form (templates/notify/_preferences.html) shows: the choices and their words."""
    return {"preferences": get_preferences(session, user=user), "kind_labels": KIND_LABELS,
            "delivery_labels": DELIVERY_LABELS, "digest_when": get_digest_schedule(session).describe()}


# --- the stage form's "notify" ----------------------------------------------------------------------------


class Notify(FormModel):
    """What the staff forms add to a change: tell people or not, and a message (the reason for a decline)."""

    notify: Annotated[str, text(10)] = "yes"
    message: Annotated[str, text(MAX_MESSAGE, newlines=True)] = ""

    @property
    def wanted(self) -> bool:
        return self.notify != "no"


# --- the fan-out (worker) ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Message:
    """What one email about an event says (the template's context; JSON for the outbox)."""

    template: str
    context: dict[str, Any] = field(default_factory=dict)


def _headline(event: Event, item: Item | None) -> tuple[str, str]:
    """(subject line, what the text under it is called)."""
    title = f"“{item.title}”" if item is not None else ""
    if event.kind is EventKind.released:
        return f"{title} is released", "Release notes"
    if event.kind is EventKind.declined:
        return f"{title} is declined", "Why"
    if event.kind is EventKind.stage:
        return f"{title} moved from {event.before} to {event.after}", "From the product team"
    if event.kind is EventKind.answer:
        return f"The product team answered on {title}", "The answer"
    if event.kind is EventKind.reply:
        return f"A reply to your comment on {title}", "The reply"
    if event.after == "declined":
        return f"Your idea “{event.idea_title}” is declined", "Why"
    if item is not None and item.published_at is not None:
        return f"Your idea “{event.idea_title}” is on the roadmap as {title}", ""
    return f"Your idea “{event.idea_title}” is taken up by the product team", ""


_WHY_YOU = {
    EventKind.reply: "You get this because you commented on this item.",
    EventKind.idea: "You get this because you suggested this idea.",
}


def _message(settings: Settings, *, event: Event, item: Item | None, item_visible: bool, user_id: int,
             name: str, portal_name: str, accent: str, text_html: str) -> tuple[Message, str, str]:
    """The email for one person, its subject line and its unsubscribe URL."""
    headline, text_label = _headline(event, item)
    scope = f"i-{item.public_id}" if item is not None and event.kind is not EventKind.idea else f"k-{event.kind.value}"
    unsubscribe = unsubscribe_url(settings, user_id=user_id, scope=scope)
    link = f"{settings.base_url}{item.path}" if item is not None and item_visible else ""
    context = {
        "portal_name": portal_name, "accent": accent, "name": name, "headline": headline, "kind": event.kind.value,
        "item_title": item.title if item is not None and item_visible else "", "item_url": link,
        "before": event.before, "after": event.after,
        "text": event.text, "text_html": text_html,
        "text_label": text_label,
        "why_you": _WHY_YOU.get(event.kind, "You get this because you follow this item: you voted for it, "
                                            "commented on it or chose to follow it."),
        "unsubscribe_url": unsubscribe,
        "unsubscribe_label": ("Stop emails about this item" if scope.startswith("i-")
                              else f"Stop these emails ({KIND_LABELS[event.kind].lower()})"),
        "preferences_url": preferences_url(settings, user_id=user_id),
    }
    return Message(template="notification", context=context), headline, unsubscribe


def fan_out(session: Session, payload: dict[str, Any], *, settings: Settings) -> int:
    """One batch of an event's recipients: an email each (or a digest entry); the next batch as a new job.
    Returns how many people this batch reached."""
    event = Event.of(payload)
    after = int(payload.get("after_user", 0))
    item = session.scalar(select(Item).where(Item.id == event.item_id)) if event.item_id is not None else None
    if event.item_id is not None and item is None:
        return 0  # deleted meanwhile: nobody is told about what is gone
    rows = session.execute(recipients(event, item).where(User.id > after).limit(BATCH)).all()
    branding = portal.get_branding(session)
    # Once for the batch, not per person; relative links made absolute (an email has no address of its own).
    text_html = str(render_markdown(event.text, base_url=settings.base_url)) if event.text else ""
    emails: list[outbox_service.Email] = []
    digest: list[dict[str, Any]] = []
    for user_id, email, display_name, delivery in rows:
        # An idea's author may not see the item it became (a draft): then the email names no item.
        visible = item is not None and (event.kind is not EventKind.idea or session.scalar(
            select(literal(True)).select_from(User).where(User.id == user_id, readers_of(item))) is not None)
        message, headline, unsubscribe = _message(settings, event=event, item=item, item_visible=visible,
                                                  user_id=user_id, name=display_name or email.split("@", 1)[0],
                                                  portal_name=branding.portal_name, accent=branding.accent_color,
                                                  text_html=text_html)
        if delivery == Delivery.weekly.value:
            digest.append({"user_id": user_id, "item_id": item.id if item is not None else None, "kind": event.kind,
                           "event_key": event.key[:120], "created_at": utcnow(),
                           "summary": {"headline": headline, "path": item.path if visible and item is not None else "",
                                       "text": event.text[:1000], "text_label": message.context["text_label"]}})
        else:
            emails.append(outbox_service.Email(to=email, template=message.template, context=message.context,
                                               key=f"notify:{event.key}:{user_id}",
                                               headers=list_unsubscribe_headers(unsubscribe)))
    outbox_service.enqueue_emails(session, emails)
    if digest:
        session.execute(insert_with_conflicts(session.get_bind().dialect.name, DigestEntry)
                        .on_conflict_do_nothing(index_elements=["user_id", "event_key"]), digest)
        schedule_digest(session)
    if len(rows) == BATCH:
        last = rows[-1][0]
        outbox_service.enqueue(session, FAN_OUT, {**payload, "after_user": last},
                               key=f"{FAN_OUT}:{event.key}:after:{last}")
    return len(rows)


# --- the weekly digest ------------------------------------------------------------------------------------

DIGEST_KEY = "digest_schedule"
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


@dataclass(frozen=True, slots=True)
class DigestSchedule:
    """When the weekly digest goes out: a weekday (0 = Monday) and an hour, in the portal's time zone."""

    weekday: int = 0
    hour: int = 9
    timezone: str = "UTC"

    def zone(self) -> ZoneInfo:
        try:
            return ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            return ZoneInfo("UTC")

    def next_after(self, moment: datetime) -> datetime:
        """The first scheduled moment strictly after `moment`, in UTC."""
        local = moment.astimezone(self.zone())
        day = local.date() + timedelta(days=(self.weekday - local.weekday()) % 7)
        for week in range(3):
            candidate = datetime(day.year, day.month, day.day, self.hour, tzinfo=self.zone()) + timedelta(weeks=week)
            if candidate.astimezone(UTC) > moment:
                return candidate.astimezone(UTC)
        raise AssertionError("unreachable: a week always has the weekday")

    def describe(self) -> str:
        return f"{WEEKDAYS[self.weekday]}s at {self.hour:02d}:00 ({self.timezone})"


def get_digest_schedule(session: Session) -> DigestSchedule:
    row = session.get(PortalSetting, DIGEST_KEY)
    value = row.value if row is not None and isinstance(row.value, dict) else {}
    try:
        return DigestSchedule(weekday=int(value.get("weekday", 0)), hour=int(value.get("hour", 9)),
                              timezone=str(value.get("timezone", "UTC")))
    except (TypeError, ValueError):
        return DigestSchedule()


def _hour(value: Any) -> Any:
    raw = str(value).strip()
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= 23:
        raise refuse("Choose an hour from 0 to 23.")
    return int(raw)


def _weekday(value: Any) -> Any:
    raw = str(value).strip()
    if not raw.isascii() or not raw.isdigit() or not 0 <= int(raw) <= 6:
        raise refuse("Choose a day of the week.")
    return int(raw)


def _zone(value: Any) -> Any:
    raw = str(value).strip()
    if raw not in time_zones():
        raise refuse("Choose a time zone from the list, such as Europe/Berlin or America/New_York.")
    return raw


class DigestScheduleUpdate(FormModel):
    weekday: Annotated[int, BeforeValidator(_weekday)] = 0
    hour: Annotated[int, BeforeValidator(_hour)] = 9
    timezone: Annotated[str, BeforeValidator(_zone)] = "UTC"


def time_zones() -> list[str]:
    return [*sorted(z for z in available_timezones() if "/" in z and not z.startswith(("Etc/", "SystemV/"))), "UTC"]


def update_digest_schedule(session: Session, *, actor: User, data: DigestScheduleUpdate) -> DigestSchedule:
    before = get_digest_schedule(session)
    new = DigestSchedule(weekday=data.weekday, hour=data.hour, timezone=data.timezone)
    row = session.get(PortalSetting, DIGEST_KEY)
    if row is None:
        session.add(PortalSetting(key=DIGEST_KEY, value=asdict(new)))
    else:
        row.value = asdict(new)
    session.flush()
    if before != new:
        audit.record(session, actor=actor, action=AuditAction.settings_digest, entity_type="setting",
                     label="Weekly digest", changes=audit.diff(
                         {"weekday": WEEKDAYS[before.weekday], "hour": before.hour, "timezone": before.timezone},
                         {"weekday": WEEKDAYS[new.weekday], "hour": new.hour, "timezone": new.timezone}))
        schedule_digest(session, schedule=new)
    return new


def schedule_digest(session: Session, *, schedule: DigestSchedule | None = None, now: datetime | None = None) -> datetime:
    """Make sure a digest job waits for the next scheduled moment (one job per moment: its key)."""
    schedule = schedule or get_digest_schedule(session)
    due = schedule.next_after(now or utcnow())
    outbox_service.enqueue(session, DIGEST, {"due": due.isoformat()}, key=f"{DIGEST}:{due.isoformat()}", run_at=due)
    return due


def send_digests(session: Session, payload: dict[str, Any], *, settings: Settings,
                 now: datetime | None = None) -> int:
    """The digest job: one email per person with waiting entries, then the next week's job. A job left from a
    schedule the admin changed since sends nothing (the new schedule has its own). Returns emails enqueued."""
    schedule = get_digest_schedule(session)
    due = datetime.fromisoformat(payload["due"])
    if schedule.next_after(due - timedelta(seconds=1)) != due:
        return 0
    sent_at = now or utcnow()
    people = list(session.scalars(select(DigestEntry.user_id).where(DigestEntry.sent_at.is_(None))
                                  .group_by(DigestEntry.user_id).order_by(DigestEntry.user_id)))
    branding = portal.get_branding(session)
    count = 0
    for user_id in people:
        user = session.get(User, user_id)
        entries = list(session.scalars(select(DigestEntry).where(DigestEntry.user_id == user_id,
                                                                 DigestEntry.sent_at.is_(None))
                                       .order_by(DigestEntry.created_at, DigestEntry.id)))
        session.execute(update(DigestEntry).where(DigestEntry.id.in_([e.id for e in entries]))
                        .values(sent_at=sent_at).execution_options(synchronize_session=False))
        if user is None or not user.is_active or user.deleted_at is not None:
            continue
        changes = [{**e.summary, "url": f"{settings.base_url}{e.summary['path']}" if e.summary.get("path") else "",
                    "text_html": str(render_markdown(e.summary.get("text", ""), base_url=settings.base_url))
                    if e.summary.get("text") else ""}
                   for e in entries]
        unsubscribe = unsubscribe_url(settings, user_id=user_id, scope="k-digest")
        context = {"portal_name": branding.portal_name, "accent": branding.accent_color, "name": user.name, "changes": changes,
                   "preferences_url": preferences_url(settings, user_id=user_id), "unsubscribe_url": unsubscribe,
                   "unsubscribe_label": "Stop the weekly digest"}
        outbox_service.enqueue_email(session, to=user.email, template="digest", context=context,
                             key=f"{DIGEST}:{payload['due']}:{user_id}", headers=list_unsubscribe_headers(unsubscribe))
        count += 1
    schedule_digest(session, schedule=schedule, now=due)
    return count


# --- registration ------------------------------------------------------------------------------------------

# The worker signs links with the settings of the process it runs in; tests point this at theirs.
job_settings: Callable[[], Settings] = get_settings


@outbox.handler(FAN_OUT)
def _fan_out_job(session: Session, job: outbox.Job) -> None:
    fan_out(session, job.payload, settings=job_settings())


@outbox.handler(DIGEST)
def _digest_job(session: Session, job: outbox.Job) -> None:
    send_digests(session, job.payload, settings=job_settings())
