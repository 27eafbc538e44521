"""A person's vote and its withdrawal, each one command shared by the vote form, the JSON fetch and the API.

The routes are adapters: they parse the request, call `vote` or `withdraw`, and render the widget, redirect
or answer JSON. Everything a vote must get right happens here, in this order, for every caller:

1. the item, looked up through the visibility rule with its row locked (a hidden item is a missing one:
   NotFound; so is a merged one, which the rule hides), so what follows reads the item as it is now, and a
   merge or a stage change waits for us;
2. the rules on the locked row: the person is signed in (NotAuthenticated), the item takes votes (not
   released or declined, nor merged by a merge that committed while the vote waited for the row: Conflict),
   the importance and the note are valid (FormInvalid, every field at once);
3. the rate limit (RateLimited), one budget per person and a larger one per address, shared with follows;
4. the write: the vote (one statement on PostgreSQL) and, when the request has one, the private "tell us
   why" reason — one per person and item, edited in place (feedback.save_reason);
5. the vote widget's state after it, without reading back what the write returned.

A vote may carry a private "tell us why" note, which is feedback for the product team: the command writes
both, the vote through voting.service and the note through feedback.service. It sits above the two
services so that neither imports the other (feedback.service casts votes when staff capture one).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Annotated, Any

from pydantic import BeforeValidator, model_validator
from sqlalchemy.orm import Session

from app.accounts.models import User
from app.accounts.viewer import Viewer
from app.db import DriverTransaction
from app.errors import FormInvalid, RateLimited
from app.feedback import service as feedback
from app.forms import FormModel, Submitted, read_values, refuse, return_path, text
from app.portal.service import counts_shown
from app.ratelimit import RateLimiter
from app.roadmap.models import Item
from app.voting import service as voting
from app.voting.models import Importance

WIDGETS = ("card", "page")  # the board's cards, the item page's box


def _importance(value: Any) -> Any:
    if isinstance(value, Importance):
        return value
    try:
        return voting.parse_importance(value)
    except FormInvalid:
        raise refuse(voting.IMPORTANCE_MESSAGE) from None


class VoteSubmit(FormModel):
    """A vote as the vote form sends it (a card's, or the item page's with its "tell us why" box), and as the
    API's values are read.

    `reason`: None leaves the reason given before as it is, text replaces it, "" takes it back. The item
    page's box shows the saved reason (and says so with `reason_shown`): emptied, it takes the reason back;
    an empty box that showed nothing, or no box at all (a card), leaves the reason as it is.
    `widget` is the widget that sent it (anything else is a card's); `next` where the form returns to.
    """

    importance: Annotated[Importance, BeforeValidator(_importance)] = Importance.important
    reason: Annotated[str | None, text(feedback.MAX_REASON)] = None
    reason_shown: str = ""
    next: Annotated[str, return_path()] = ""
    widget: Annotated[str, BeforeValidator(lambda value: value if value in WIDGETS else "card")] = "card"

    @model_validator(mode="before")
    @classmethod
    def _blank_reason(cls, values: Any) -> Any:
        if isinstance(values, dict) and not (isinstance(values.get("reason"), str) and values["reason"].strip()):
            values = {**values, "reason": "" if values.get("reason_shown") else None}
        return values


class ReturnTo(FormModel):
    """A follow or unfollow form: where it goes back to (a path of this site, which safe_next checks; longer
    than any page's address, it is dropped and the form goes back to the item)."""

    next: Annotated[str, return_path()] = ""


class VoteWithdrawal(ReturnTo):
    """The withdraw form of a vote widget: where it goes back to, and the widget that sent it."""

    widget: Annotated[str, BeforeValidator(lambda value: value if value in WIDGETS else "card")] = "card"


@dataclass(frozen=True, slots=True)
class VoteLimits:
    """How many votes, withdrawals and follows a person (and an address) may make: the settings' limits
    and the address the request came from. The routes build it from the request."""

    limiter: RateLimiter
    per_person: str  # e.g. "60/minute"
    per_address: str
    address: str
    # Counted already for this request (PostgreSQL's vote at once tried first, then ran the usual way): True, or
    # what the count refused
    counted: bool | RateLimited = False

    def hit(self, user: User) -> None:
        """Count one action; RateLimited when the person or the address is over its budget."""
        if isinstance(self.counted, RateLimited):
            raise self.counted
        if self.counted:
            return
        self.limiter.hit(self.per_person, f"vote:user:{user.id}")
        self.limiter.hit(self.per_address, f"vote:ip:{self.address}")

    def allows(self, user: User) -> bool:
        """Whether `hit` would count one more action now, counting nothing."""
        if isinstance(self.counted, RateLimited):
            return False
        return self.counted or (self.limiter.allows(self.per_person, f"vote:user:{user.id}")
                                and self.limiter.allows(self.per_address, f"vote:ip:{self.address}"))


@dataclass(frozen=True, slots=True)
class Voted:
    item: Item
    created: bool  # a new vote (False: the importance of an existing one changed, or stayed)
    importance: Importance
    reason_change: str  # "added", "updated", "removed", "kept", or "" when the vote came without a reason field
    state: voting.VoteState  # what the vote widget shows now


@dataclass(frozen=True, slots=True)
class Withdrawn:
    item: Item
    removed: bool  # False: there was no vote to withdraw
    state: voting.VoteState


def _open_item(session: Session, viewer: Viewer, public_id: str) -> tuple[Item, User]:
    """Steps 1 and 2 of every vote command: the item, locked and visible, and the rules on it."""
    item = voting.get_item_to_vote(session, viewer, public_id)
    user = voting.require_voter(viewer)
    voting.ensure_open(item)
    return item, user


def vote(session: Session, *, viewer: Viewer, public_id: str, form: Submitted[VoteSubmit] | None = None,
         importance: str | Importance = "", reason: str | None = None, limits: VoteLimits,
         with_reason: bool = False) -> Voted:
    """The viewer's vote (or new importance) for the item `public_id`, with their private "tell us why" reason.

    `form`: the vote form as the route read it (`read_form(request, VoteSubmit)`); without one, `importance`
    and `reason` (the API, scripts) are read into the same model. `reason`: None leaves the reason they gave
    before as it is (a card, an API call without one); text replaces it; "" takes it back (the item page's
    form, which showed it). `with_reason`: the widget's state carries the reason (the item page), read when
    the vote did not say it.
    Refusals, in this order: NotFound (missing, hidden or merged), NotAuthenticated, Conflict (released, declined,
    or merged while the vote waited for the item's lock), FormInvalid ({"importance": …, "reason": …}, every field
    at once), RateLimited.
    """
    if form is None:
        form = read_values(VoteSubmit, {"importance": importance, "reason": reason,
                                        "reason_shown": "yes" if reason is not None else ""})
    item, user = _open_item(session, viewer, public_id)
    data = form.valid()
    chosen, reason = data.importance, data.reason
    limits.hit(user)
    shown = counts_shown(session, viewer)  # before the write: see voting.state_after()
    result = voting.cast_vote(session, item=item, user=user, importance=chosen)
    change, text = "", None
    if reason is not None:
        saved = feedback.save_reason(session, item=item, author=user, body=reason)
        change, text = saved.change, saved.text
        if result.created and change == "updated":
            change = "added"  # a withdrawn vote's reason, replaced by what the new vote's empty box was given
    elif with_reason:
        text = feedback.reason_of(session, item=item, author=user)
    state = voting.state_after(session, viewer=viewer, item=item, mine=result.importance, count=result.count,
                               shown=shown)
    return Voted(item=item, created=result.created, importance=result.importance, reason_change=change,
                 state=replace(state, reason=text))


def vote_at_once(session: Session, *, viewer: Viewer, public_id: str, importance: Importance,
                 guessed: tuple[int, int, int], lock_timeout: float | None = None,
                 driver: DriverTransaction | None = None) -> Voted | None:
    """The vote as one statement (PostgreSQL: `voting.cast_at_once`), for the vote's routes under guessed revisions
    (`revision.guess`), after the checks that need no item (a valid form with no reason). None when the usual way
    (`vote`) must answer: the caller rolls back and runs it. The caller counts the rate limit after it (and rolls
    back when over the budget): the statement checked the item's rules first, as `vote` does."""
    user = voting.require_voter(viewer)
    shown = counts_shown(session, viewer)
    done = voting.cast_at_once(session, viewer=viewer, user=user, public_id=public_id, importance=importance,
                               guessed=guessed, lock_timeout=lock_timeout, driver=driver)
    if done is None:
        return None
    return Voted(item=done.item, created=done.created, importance=importance, reason_change="",
                 state=voting.state_at_once(done, mine=importance, shown=shown))


def withdraw_at_once(session: Session, *, viewer: Viewer, public_id: str,
                     guessed: tuple[int, int, int], lock_timeout: float | None = None,
                     driver: DriverTransaction | None = None) -> Withdrawn | None:
    """The withdrawal as one statement, as `vote_at_once`."""
    user = voting.require_voter(viewer)
    shown = counts_shown(session, viewer)
    done = voting.withdraw_at_once(session, viewer=viewer, user=user, public_id=public_id, guessed=guessed,
                                   lock_timeout=lock_timeout, driver=driver)
    if done is None:
        return None
    return Withdrawn(item=done.item, removed=done.created, state=voting.state_at_once(done, mine=None, shown=shown))


def withdraw(session: Session, *, viewer: Viewer, public_id: str, limits: VoteLimits,
             with_reason: bool = False) -> Withdrawn:
    """Withdraw the viewer's vote for the item `public_id` (idempotent). Closed and merged items keep their
    votes as they were (Conflict). A reason given with the vote stays with the team (the inbox says the vote
    was withdrawn). Refusals in the order of `vote`."""
    item, user = _open_item(session, viewer, public_id)
    limits.hit(user)
    shown = counts_shown(session, viewer)
    withdrawal = voting.unvote(session, viewer=viewer, item=item)
    state = voting.state_after(session, viewer=viewer, item=item, mine=None, count=withdrawal.count, shown=shown)
    if with_reason:
        state = replace(state, reason=feedback.reason_of(session, item=item, author=user))
    return Withdrawn(item=item, removed=withdrawal.removed, state=state)


def item_to_follow(session: Session, *, viewer: Viewer, public_id: str, limits: VoteLimits) -> tuple[Item, User]:
    """The item a follow or unfollow names, locked and visible, after the shared rate limit."""
    item = voting.get_item_to_vote(session, viewer, public_id)
    user = voting.require_voter(viewer)
    limits.hit(user)
    return item, user
