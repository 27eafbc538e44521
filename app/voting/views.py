"""Voting and following as customers do it: plain forms that work without JavaScript, and the same
routes answering JSON for static/app.js (which posts them with fetch, X-CSRF-Token and
Accept: application/json, and swaps the returned widget HTML in place).

    POST /items/{public_id}/vote      importance, reason?, next, widget   → 303 back to `next`, or JSON
    POST /items/{public_id}/unvote    next, widget (commands.VoteWithdrawal)
    POST /items/{public_id}/follow    next (commands.ReturnTo)
    POST /items/{public_id}/unfollow  next (commands.ReturnTo)

The vote and the withdrawal are the portal's busiest writes: `direct_routes()` serves them as plain Starlette routes
ahead of the FastAPI router, which call the app's dependencies themselves (see there) instead of having FastAPI
solve them per request, and take the person from app/deps.py `get_voter` (the session kept per worker, so that a
vote's transaction has no statement for it).

The routes are adapters around app/voting/commands.py (`vote`, `withdraw`), which the API shares: a hidden
item answers exactly like a missing one (404, before anything else is looked at); a released or declined
item answers 409 with the reason the widget shows; an unknown importance or a too-long note 422 (the item
page again, with what was typed, or JSON `fields`); then too many votes 429. The item page and the board get
their widget state from app/roadmap/pages.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy.orm import Session
from starlette.routing import Route

from app import revision
from app.accounts.viewer import Viewer
from app.accounts.views import client_ip, safe_next
from app.db import DriverTransaction, LostBeforeAnyStatement, RequestSession
from app.deps import CurrentViewer, DbSession, as_the_app_would, get_voter, kept_voter
from app.errors import AppError, DatabaseBusy, FormInvalid, NotAuthenticated, RateLimited
from app.forms import FormModel, Submitted, read_form
from app.metrics import NamedRoute
from app.pagecache import CSRF_MARKER
from app.roadmap.models import Item
from app.roadmap.pages import VoteForm as RefusedVote
from app.roadmap.pages import render_item_page
from app.security import csrf_token, verify_csrf
from app.voting import commands
from app.voting import service as voting
from app.voting.widget import CARDS
from app.web import redirect, templates

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

WIDGETS = commands.WIDGETS
_Form = TypeVar("_Form", bound=FormModel)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "").split(",")[0]


# In the request's state: the vote's rate limit counted already (True, or its refusal), by the vote at once
_COUNTED = "vote_counted"


def vote_limits(request: Request) -> commands.VoteLimits:
    """The budget votes, withdrawals and follows share: one per person, and a larger one per address."""
    settings = request.app.state.settings
    return commands.VoteLimits(limiter=request.app.state.limiter, per_person=settings.vote_rate_limit,
                               per_address=settings.vote_ip_rate_limit, address=client_ip(request),
                               counted=request.scope.get("state", {}).get(_COUNTED, False))


def _widget_html(request: Request, viewer: Viewer, item: Item, state: voting.VoteState, *, widget: str,
                 next_url: str, message: str = "") -> str:
    token = csrf_token(request)
    card = widget == "card"  # a card shows no message: rendered once for all its counts (`CardWidgets`)

    def render(shown: voting.VoteState) -> str:
        return templates.env.get_template("voting/_vote.html").render({
            "request": request, "viewer": viewer, "item": item, "widget": widget, "next_url": next_url, "vote": shown,
            "csrf_token": CSRF_MARKER if card else token, "vote_form": {}, "vote_errors": {}, "vote_message": message,
        })

    if not card:
        return render(state)
    # Keyed by what the template's `here` is made of (request.url's path and query), read from the scope: building
    # request.url parses the whole address again (a few percent of a vote's CPU)
    return CARDS.html(render, state, (next_url, request.scope["path"], request.scope["query_string"])).replace(
        CSRF_MARKER, token)


def _follow_html(request: Request, viewer: Viewer, item: Item, *, following: bool, next_url: str) -> str:
    return templates.env.get_template("voting/_follow.html").render({
        "request": request, "viewer": viewer, "item": item, "following": following, "next_url": next_url,
        "csrf_token": csrf_token(request),
    })


def _back(request: Request, item: Item, next_url: str, anchor: str, flash: str) -> Response:
    """Back where the form was, with the outcome as a flash. On the item's own page the redirect lands on the
    flash (`#flash`, the first message's id): the widget sits high in the page, just below the message, and
    landing on the widget left the message just above the window. Elsewhere (a card on a board) it lands on the
    widget, so the person keeps their place in the list."""
    target = safe_next(next_url, default=item.path)
    if "#" not in target:
        target += "#flash" if target.split("?")[0] == item.path else f"#{anchor}"
    return redirect(request, target, flash=flash)


def _sign_in_first(request: Request, item: Item, what: str) -> Response:
    """Signed out: JSON callers get 401; a form sends the person to sign in and back to the item."""
    if _wants_json(request):
        raise NotAuthenticated(f"Please sign in to {what}.")
    return redirect(request, f"/login?next={quote(item.path)}", flash=f"Please sign in to {what}.", kind="info")


async def _item_page_again(request: Request, session: Session, viewer: Viewer, public_id: str,
                           form: dict[str, str], errors: dict[str, str], *, limited: RateLimited | None = None
                           ) -> Response:
    """The item page with the refused vote form (what was typed, and why): 422, or 429 when too fast."""
    item = voting.get_item_to_vote(session, viewer, public_id)  # the command found it: locked, visible
    if limited is None:
        return render_item_page(request, session, viewer, item, vote_form=RefusedVote(form, errors), status_code=422)
    message = f"{limited.detail} Your vote was not counted yet; what you typed is still here."
    return render_item_page(request, session, viewer, item, vote_form=RefusedVote(form, errors, message),
                            status_code=429, headers=dict(limited.headers))


# --- votes ---------------------------------------------------------------------------------------------


async def vote(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    if viewer.user is None:
        return _sign_in_first(request, voting.get_item_to_vote(session, viewer, public_id), "vote")
    # Every field is read by commands.VoteSubmit, whose rules give the messages (a `next` too long for any
    # address is dropped there); refused, the command says so after its checks on the item.
    form = await read_form(request, commands.VoteSubmit)
    sent = _sent(form)  # a refused form's widget and next still count
    as_json, widget, next = _wants_json(request), sent.widget, sent.next
    typed = {"importance": form.typed["importance"], "reason": form.typed["reason"]}
    try:
        done = commands.vote(session, viewer=viewer, public_id=public_id, form=form, limits=vote_limits(request),
                             with_reason=as_json and widget == "page")
    except FormInvalid as exc:
        if as_json:
            raise
        return await _item_page_again(request, session, viewer, public_id, typed, exc.errors)
    except RateLimited as exc:
        if as_json:
            raise
        return await _item_page_again(request, session, viewer, public_id, typed, {}, limited=exc)
    return _voted(request, viewer, done, as_json=as_json, widget=widget, next_url=next)


def _voted(request: Request, viewer: Viewer, done: commands.Voted, *, as_json: bool, widget: str,
           next_url: str) -> Response:
    """The answer to a vote counted: back where the form was, or the widget as JSON."""
    item = done.item
    noted = REASON_NOTES.get(done.reason_change, "")
    if done.created:
        message = f"Your vote is counted: {done.importance.label}.{noted}"
    else:
        message = f"Your vote is now {done.importance.label}.{noted}"
    if not as_json:
        return _back(request, item, next_url, f"vote-{item.public_id}", message)
    extra = {}
    if widget == "page" and done.created:
        # Voting followed the item: the page's follow button says so too.
        extra["follow_html"] = _follow_html(request, viewer, item, next_url=item.path, following=True)
    return _vote_json(request, viewer, item, done.state, widget=widget, next_url=next_url, message=message,
                      extra=extra)


REASON_NOTES = {"added": " Thank you for telling us why.", "updated": " Your reason is updated.",
                "removed": " Your reason is taken back."}


async def unvote(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    if viewer.user is None:
        return _sign_in_first(request, voting.get_item_to_vote(session, viewer, public_id), "vote")
    sent = _sent(await read_form(request, commands.VoteWithdrawal))
    widget, next = sent.widget, sent.next
    done = commands.withdraw(session, viewer=viewer, public_id=public_id, limits=vote_limits(request),
                             with_reason=_wants_json(request) and widget == "page")
    return _withdrawn(request, viewer, done, widget=widget, next_url=next)


def _withdrawn(request: Request, viewer: Viewer, done: commands.Withdrawn, *, widget: str, next_url: str) -> Response:
    message = "Your vote is withdrawn." if done.removed else "You had not voted for this item."
    if not _wants_json(request):
        return _back(request, done.item, next_url, f"vote-{done.item.public_id}", message)
    return _vote_json(request, viewer, done.item, done.state, widget=widget, next_url=next_url, message=message)


# --- the direct routes of the vote and the withdrawal -------------------------------------------------------

async def _direct(request: Request, *, at_once: bool = False) -> tuple[Session, Viewer, str]:
    """The dependencies of the vote routes, called directly (`as_the_app_would`, then this router's own, verify_csrf):
    FastAPI solving them cost more CPU per vote than the vote's own statements. The vote at once takes the kept person
    as it is (`kept_voter`: its statement needs their id only)."""
    viewer = await as_the_app_would(request, kept_voter if at_once else get_voter)
    await verify_csrf(request)
    session: Session = request.state.db.session
    return session, viewer, request.path_params["public_id"]


async def _vote_direct(request: Request) -> Response:
    answer = await _at_once(request, _vote_at_once)
    if answer is not None:
        return answer
    session, viewer, public_id = await _direct(request)
    return await vote(request, session, viewer, public_id)


async def _unvote_direct(request: Request) -> Response:
    answer = await _at_once(request, _unvote_at_once)
    if answer is not None:
        return answer
    session, viewer, public_id = await _direct(request)
    return await unvote(request, session, viewer, public_id)


# --- PostgreSQL: the vote and the withdrawal at once ----------------------------------------------------------

_Attempt = Callable[[Request, tuple[int, int, int]], Awaitable[Response | None]]


async def _at_once(request: Request, attempt: _Attempt) -> Response | None:
    """On PostgreSQL, first the vote (or withdrawal) as one statement: the revisions this worker read last are
    taken as the request's (`revision.guess`: no statement), so the kept session's person and the cached settings
    need none either, and the vote's statement itself checks them while it looks up the item and writes
    (`voting.cast_at_once`). Whatever else happens (a guess gone stale, a refusal of any kind, a form the
    statement does not take: a reason, the item page's widget, which shows it), everything done under the guess
    is dropped (the transaction rolled back, the viewer forgotten) and the request runs the usual way, which
    reads the revisions and answers. Only the rate limit's count is kept, so that the request counts once."""
    holder: RequestSession = request.state.db
    session: Session = holder.session
    if session.get_bind().dialect.name != "postgresql":
        return None
    arrived = time.monotonic()
    async with _item_turn(request) as turn, _slots(request):
        request.scope["state"][_WAITED] = time.monotonic() - arrived
        request.scope["state"][_TURN] = turn
        guessed = revision.guess(session, detached=holder.database.drives_writes)
        if guessed is None:
            return None
        try:
            answer = await attempt(request, guessed)
        except DatabaseBusy:
            raise  # it waited the whole lock timeout already: the 503, not a second wait the usual way
        except AppError:
            answer = None
        if answer is not None:
            return answer
        _start_over(request, session)
    return None


class _ItemGates:
    """The votes at once for one item hold all but one of a worker's off-loop slots at most, the others for the item
    waiting here, holding no slot and no connection: votes waiting for an item's row (held by someone else: staff
    changing it, a long transaction) took every slot, and votes for every other item, the searches and the API's
    list waited behind them (a walk-through: 10.6 s with the row held 12 s). One at a time per item was tried: the
    item's next vote then waited for a slot only once the previous had its answer, and the votes' p99 doubled under
    wrk (bench/README.md). A vote that waits here longer than the lock timeout answers 503, as one waiting for the
    row would."""

    def __init__(self) -> None:
        # (loop, item) -> [its turns, how many votes hold or wait for one]
        self._gates: dict[tuple[asyncio.AbstractEventLoop, str], list[Any]] = {}

    @contextlib.asynccontextmanager
    async def turn(self, public_id: str, *, width: int, timeout: float | None) -> AsyncIterator[_Turn]:
        """One of the item's `width` turns, until the block ends or the turn is given up (`_Turn.give_up`, once the
        vote committed)."""
        key = (asyncio.get_running_loop(), public_id)
        gate = self._gates.get(key)
        if gate is None:
            gate = self._gates[key] = [asyncio.Semaphore(width), 0]
        gate[1] += 1
        try:
            try:
                await asyncio.wait_for(gate[0].acquire(), timeout)
            except TimeoutError:
                raise DatabaseBusy(DatabaseBusy.LOCKED) from None
            turn = _Turn(gate[0])
            try:
                yield turn
            finally:
                turn.give_up()
        finally:
            gate[1] -= 1
            if gate[1] == 0:
                del self._gates[key]


class _Turn:
    """An item's turn for a vote at once (`_ItemGates`), given up once the vote has committed, not after its answer
    is made too."""

    __slots__ = ("_gate",)

    def __init__(self, gate: asyncio.Semaphore) -> None:
        self._gate: asyncio.Semaphore | None = gate

    def give_up(self) -> None:
        if self._gate is not None:
            self._gate.release()
            self._gate = None


_ITEM_GATES = _ItemGates()


def _item_turn(request: Request) -> contextlib.AbstractAsyncContextManager[_Turn]:
    holder: RequestSession = request.state.db
    return _ITEM_GATES.turn(request.path_params["public_id"], width=max(1, holder.database.off_loop_slot_count - 1),
                            timeout=_lock_timeout(request))


def _slots(request: Request) -> asyncio.Semaphore:
    """How many votes at once a worker runs, searches included: one connection of its pool fewer than the pool holds
    (`Database.off_loop_slots`). Each takes its connection on the event loop and writes in a thread."""
    holder: RequestSession = request.state.db
    return holder.database.off_loop_slots()


def _start_over(request: Request, session: Session) -> None:
    """Drop what the vote at once did under its guess: the usual way runs next, from the start."""
    revision.guess_failed(session)
    session.rollback()
    session.expunge_all()  # the kept person it took in (`in_session`) too: the usual way takes it in again
    request.scope["state"]["viewer"] = None


async def _at_once_checks(request: Request, form_model: type[_Form]) -> tuple[Session, Viewer, str, _Form] | None:
    """What the vote at once checks before its statement, under the guess: the route's dependencies, a signed-in
    customer, a valid form that the card's widget or a plain form sent (the item page's JSON widget shows the
    person's reason: the usual way reads it). The rate limit comes after the statement (`_count_once`)."""
    session, viewer, public_id = await _direct(request, at_once=True)
    if not voting.at_once_possible(viewer):
        return None
    form = await read_form(request, form_model)
    sent = form.data
    if sent is None or getattr(sent, "reason", None) is not None or (_wants_json(request)
                                                                     and getattr(sent, "widget", "") == "page"):
        return None
    return session, viewer, public_id, sent


def _may_count(request: Request, viewer: Viewer) -> bool:
    """Whether the rate limit would count the vote at once (`_count_once`), counting nothing: False when the person or
    the address is over the budget already. Votes of theirs running at once meanwhile may take it past by as many."""
    assert viewer.user is not None  # nosec B101 # at_once_possible: signed in
    return vote_limits(request).allows(viewer.user)


def _count_once(request: Request, viewer: Viewer) -> bool:
    """The rate limit after the vote at once found its item open (the rules come first, as the usual way's): counted
    for the request, so that running it the usual way does not count it again. False when over the budget: the
    caller's transaction is rolled back, and the usual way answers the refusal after its own checks on the item."""
    assert viewer.user is not None  # nosec B101 # at_once_possible: signed in
    try:
        vote_limits(request).hit(viewer.user)
    except RateLimited as exc:
        request.scope["state"][_COUNTED] = exc
        return False
    request.scope["state"][_COUNTED] = True
    return True


_Done = TypeVar("_Done")


async def _write_at_once(request: Request, session: Session, viewer: Viewer,
                         statement: Callable[[DriverTransaction | None], _Done | None]) -> _Done | None:
    """The vote's statement (`statement`: the command at once), the rate limit and the commit, in a thread: while they
    wait for the database (and its locks), the worker's event loop answers other requests, above all the kept pages
    a vote would otherwise hold up. None when the usual way must answer (nothing written).

    Where the database allows it (`Database.drives_writes`: PostgreSQL outside the tests' transaction) the statement
    is a transaction of its own through psycopg alone (`DriverTransaction`: autocommit, one round trip), not
    on the session's connection: the session's checkout, SQLAlchemy's execution and the ORM's commit cost more CPU
    than the statement, and BEGIN and COMMIT as round trips of their own 0.17 ms more (bench/README.md). The rate
    limit is then looked at before the statement and counted after it, once it wrote (`_may_count`); on the session's
    connection it is counted after the statement and rolled back when over. A connection found dead at the statement
    is dropped, and the usual way runs (nothing was written).

    It commits as soon as the statement confirmed the guess, before the answer is made: the vote's locks (the item's
    row, the desk's aggregates) are held for the statement only, not while the widget renders, which other votes for
    the item would wait for. Everything the answer shows is known already (a failed commit still answers 500, never a
    vote that was not stored). The thread gives the connection back to the pool whatever happens, never waiting for
    the loop to do it: a request of the same loop waiting for a connection stops the loop, and would wait for ever for
    one only the loop could give back.
    """
    holder: RequestSession = request.state.db

    def run() -> _Done | None:
        # Not when the session holds a connection already (a person not kept yet was read): one connection a vote
        if holder.database.drives_writes and not session.in_transaction():
            return alone()
        try:
            done = statement(None)
            if done is None or not _count_once(request, viewer):
                session.rollback()
                return None
            revision.confirmed(session)
            holder.end_transaction()
            revision.forget(session)  # the vote moved the votes revision: read again, if read at all
            return done
        except BaseException:
            session.rollback()
            raise

    def alone() -> _Done | None:
        # The statement is its own transaction (one round trip, `DriverTransaction`), so the budget is looked
        # at before it and counted after it, only when it wrote: a refused vote spends nothing, as the usual way's.
        if not _may_count(request, viewer):
            return None  # over the budget: the usual way answers the refusal after its own checks on the item
        try:
            driver = holder.database.driver_transaction()
        except LostBeforeAnyStatement:
            return None
        try:
            done = statement(driver)
        except LostBeforeAnyStatement:
            return None
        finally:
            driver.close()
        if done is not None:
            _count_once(request, viewer)  # written: counted even should votes at once have spent the budget meanwhile
            revision.forget(session)
        return done

    try:
        return await asyncio.to_thread(run)
    finally:
        turn: _Turn | None = request.scope["state"].pop(_TURN, None)
        if turn is not None:  # committed or rolled back: the item's next vote may go
            turn.give_up()


# In the request's state: how long the vote at once waited for its item's turn and a slot, and the turn
_WAITED, _TURN = "vote_waited", "vote_turn"


def _lock_timeout(request: Request) -> float | None:
    """The database's whole lock timeout (`DB_LOCK_TIMEOUT`): the vote at once waits that long, off the loop, less
    what it waited for its turn already."""
    timeout: float | None = getattr(request.app.state.database, "lock_timeout", None)
    if timeout is None:
        return None
    waited: float = request.scope.get("state", {}).get(_WAITED, 0.0)
    return max(0.05, timeout - waited)


async def _vote_at_once(request: Request, guessed: tuple[int, int, int]) -> Response | None:
    checked = await _at_once_checks(request, commands.VoteSubmit)
    if checked is None:
        return None
    session, viewer, public_id, sent = checked
    done = await _write_at_once(request, session, viewer, lambda driver: commands.vote_at_once(
        session, viewer=viewer, public_id=public_id, importance=sent.importance, guessed=guessed,
        lock_timeout=_lock_timeout(request), driver=driver))
    if done is None:
        return None
    return _voted(request, viewer, done, as_json=_wants_json(request), widget=sent.widget, next_url=sent.next)


async def _unvote_at_once(request: Request, guessed: tuple[int, int, int]) -> Response | None:
    checked = await _at_once_checks(request, commands.VoteWithdrawal)
    if checked is None:
        return None
    session, viewer, public_id, sent = checked
    done = await _write_at_once(request, session, viewer, lambda driver: commands.withdraw_at_once(
        session, viewer=viewer, public_id=public_id, guessed=guessed, lock_timeout=_lock_timeout(request),
        driver=driver))
    if done is None:
        return None
    return _withdrawn(request, viewer, done, widget=sent.widget, next_url=sent.next)


def direct_routes() -> list[Route]:
    """POST /items/{public_id}/vote and /unvote as plain Starlette routes, for the app to put ahead of its
    routers (form posts and fetches alike: one code path). Not in the OpenAPI description, as before."""
    return [NamedRoute("/items/{public_id}/vote", _vote_direct, methods=["POST"], include_in_schema=False),
            NamedRoute("/items/{public_id}/unvote", _unvote_direct, methods=["POST"], include_in_schema=False)]


def _sent(form: Submitted[_Form]) -> _Form:
    """What a form sent, refused or not: its `next` (one too long for any page's address was dropped by the
    model: the form goes back to the item) and its widget."""
    sent = form.data or form.partial
    assert sent is not None
    return sent


def _vote_json(request: Request, viewer: Viewer, item: Item, state: voting.VoteState, *, widget: str,
               next_url: str, message: str, extra: dict[str, str] | None = None) -> JSONResponse:
    next_url = safe_next(next_url, default=item.path)
    return JSONResponse({
        "item": item.public_id,
        "vote_count": state.count,
        "my_vote": state.mine.key if state.mine else None,
        "message": message,
        "html": _widget_html(request, viewer, item, state, widget=widget, next_url=next_url, message=message),
        **(extra or {}),
    })


# --- follows -------------------------------------------------------------------------------------------


async def _set_following(request: Request, session: Session, viewer: Viewer, public_id: str, next_url: str,
                         *, following: bool) -> Response:
    if viewer.user is None:
        return _sign_in_first(request, voting.get_item_to_vote(session, viewer, public_id), "follow items")
    item, _ = commands.item_to_follow(session, viewer=viewer, public_id=public_id, limits=vote_limits(request))
    voting.set_following(session, viewer=viewer, item=item, following=following)
    message = ("You follow this item: you hear of its changes as your email choices say." if following
               else "You no longer follow this item.")
    if not _wants_json(request):
        return _back(request, item, next_url, "follow", message)
    return JSONResponse({
        "item": item.public_id, "following": following, "message": message,
        "html": _follow_html(request, viewer, item, following=following,
                             next_url=safe_next(next_url, default=item.path)),
    })


@router.post("/items/{public_id}/follow", response_class=HTMLResponse)
async def follow(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    sent = _sent(await read_form(request, commands.ReturnTo))
    return await _set_following(request, session, viewer, public_id, sent.next, following=True)


@router.post("/items/{public_id}/unfollow", response_class=HTMLResponse)
async def unfollow(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str) -> Response:
    sent = _sent(await read_form(request, commands.ReturnTo))
    return await _set_following(request, session, viewer, public_id, sent.next, following=False)
