"""Dependency aliases: DbSession, CurrentViewer, StaffUser, AdminUser."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import replace
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, make_transient_to_detached

from app import revision
from app.accounts import service as accounts
from app.accounts import tokens
from app.accounts.models import TokenScope, User
from app.accounts.viewer import ANONYMOUS, Viewer
from app.db import Database, RequestSession, utcnow
from app.errors import Forbidden, NotAuthenticated, NotFound
from app.inputs import refuse_bad_path
from app.portal import service as portal
from app.security import SESSION_COOKIE, session_cookie_value

log = logging.getLogger("ahead.api")

__all__ = ["SESSION_COOKIE"]  # its http name; app.security.cookies(request).session is the one in use


async def get_db(request: Request) -> Session:
    session: Session = request.state.db.session
    return session


DbSession = Annotated[Session, Depends(get_db)]


async def get_viewer(request: Request) -> Viewer:
    cached: Viewer | None = request.scope.get("state", {}).get("viewer")
    if cached is not None:
        return cached
    if request.url.path.startswith(API_PREFIX) and "authorization" in request.headers:
        # An API call with credentials: the token and only the token (no cookie is looked at).
        viewer = _token_viewer(request)
        request.state.viewer = viewer
        return viewer
    token = session_cookie_value(request)
    viewer = ANONYMOUS
    if token:
        row = accounts.load_session(request.state.db.session, token)
        if row is not None:
            viewer = Viewer.of(row.user, row.id)
    request.state.viewer = viewer
    return viewer


CurrentViewer = Annotated[Viewer, Depends(get_viewer)]


async def get_voter(request: Request) -> Viewer:
    """`get_viewer` for the vote's routes, the portal's and the API's, the busiest writes: a session cookie's person
    kept per worker under the revisions the vote's transaction reads for its settings anyway
    (`SignedInViewers.in_transaction`), so that a vote has no statement of its own for the session once kept. An API
    call with credentials, or no session cookie: `get_viewer`."""
    return await _voter(request, attach=True)


async def kept_voter(request: Request) -> Viewer:
    """`get_voter` with the kept person as it is kept, a `User` of no session shared by the worker's requests, not
    one of the request's session (`in_session`): for PostgreSQL's vote at once, whose statement takes only the
    person's id. Read-only: nothing may change it or give it to a session. A request that goes on the usual way
    forgets it first (the vote's `_start_over`), and `get_voter` then gives it its own."""
    return await _voter(request, attach=False)


async def _voter(request: Request, *, attach: bool) -> Viewer:
    cached: Viewer | None = request.scope.get("state", {}).get("viewer")
    if cached is not None:
        return cached
    token = session_cookie_value(request)
    if not token or (request.scope["path"].startswith(API_PREFIX) and "authorization" in request.headers):
        return await get_viewer(request)
    session: Session = request.state.db.session
    kept = request.app.state.vote_viewers.in_transaction(session, token)
    viewer = ANONYMOUS if kept is None else in_session(session, kept) if attach else kept
    request.state.viewer = viewer
    return viewer


Voter = Annotated[Viewer, Depends(get_voter)]


# (content revision, votes revision, the viewer or None): who a session cookie stands for, before the stack
SignedIn = tuple[int, int, Viewer | None]


class SignedInViewers:
    """Who a session cookie stands for, with the (content, votes) revisions, for the pages answered to signed-in
    people before the stack (app.pagecache.KeptPagesMiddleware).

    The lookup checks what `load_session`, the one `get_viewer` makes, checks (unknown, expired, inactive: nobody),
    as plain columns (`accounts.session_columns`); the viewer made from them is kept per worker, keyed by the cookie,
    and used again while the row reads the same. A kept row's expiry is checked per request. What else can change
    the row must show at the next request: a sign-out or a revoked session (a deleted row), a changed role, a
    deactivated account, a person moved to another organisation or an organisation to another segment.

    * With SQLite's `data_version` watcher (app/revision.py) the row is kept until anything is committed anywhere:
      each of those is a commit.
    * With PostgreSQL's single-flight read (`read_after`) the row is kept while the content and the sessions
      revisions read the same: the database's triggers move the sessions revision on every write of
      `user_sessions` and of what a viewer reads of the person and their organisation, whoever writes them (SQL by
      hand too, app/revision.py). A row not kept is read after the revisions, off the event loop.
    * Elsewhere (a database other than the app's own, e.g. a test's rolled-back transaction) the row is read per
      request, in the same short transaction as the revisions.
    * For the vote's routes (`in_transaction`, an instance of its own: app.state.vote_viewers) the row is kept while
      the content and the sessions revisions that the vote's own transaction reads stay the same, on any database;
      a row not kept is read in that transaction, after the revisions. (The PostgreSQL worker's shared read was tried
      for it first: waiting for a read that starts after the vote arrived cost the vote more than the statements
      it saved, bench/README.md.)
    """

    MAX_KEPT = 10_000

    def __init__(self) -> None:
        # What the kept rows were read after: SQLite's data_version, or the (content, sessions) revisions
        self._under: Hashable = None
        self._kept: dict[str, tuple[tuple[Any, ...], Viewer]] = {}  # cookie -> (its row, the viewer made of it)

    def __call__(self, database: Database, token: str, *, watcher: revision.SqliteWatcher | None = None) -> SignedIn:
        if watcher is None:
            with database.new_session(write=False) as session:
                content, votes = revision.both(session)
                row = accounts.session_columns(session, token)
            return content, votes, self._viewer(token, row) if row is not None else None
        content, votes = watcher(database)
        # Read after the data_version: never older than what it says was committed.
        return content, votes, self._of(watcher.version, token, lambda: _session_columns(database, token))

    def in_transaction(self, session: Session, token: str) -> Viewer | None:
        """Who the cookie stands for, for a write request (the vote's route, app/voting/views.py): kept while the
        (content, sessions) revisions this transaction reads stay the same — one statement the request runs anyway,
        for the settings cached under them —, else the session's row read in the same transaction and kept. Nobody
        (None) for an unknown, expired or inactive session, as `load_session`. The kept viewer's person is a `User`
        of no session: `in_session` gives the request its own."""
        memo = revision.read_all(session)
        # Read after the revisions, in the same transaction: never older than they say.
        return self._of((memo[0], memo[3]), token, lambda: accounts.session_columns(session, token))

    async def read_after(self, watcher: revision.PostgresWatcher, database: Database, token: str) -> SignedIn:
        """PostgreSQL: the revisions from the worker's shared read (one that started after this request arrived,
        `SingleFlight`), and the viewer kept under the same (content, sessions) revisions or read after them."""
        content, votes, sessions = await watcher()
        under = (content, sessions)
        kept = self._kept_under(under, token)
        if kept is None:
            row = await asyncio.to_thread(_session_columns, database, token)
            if row is None:
                return content, votes, None
            # Kept only if no other request saw other revisions meanwhile: a row is used again only by requests
            # whose read answered the revisions it was read after (then nothing it shows moved since).
            kept = row, self._viewer(token, row, keep=self._under == under)
        return content, votes, _unexpired(*kept)

    def _of(self, under: Hashable, token: str, read: Callable[[], tuple[Any, ...] | None]) -> Viewer | None:
        """The viewer kept for the cookie under `under`, else made of the row `read` gives (None: nobody) and kept;
        None once the session has expired."""
        kept = self._kept_under(under, token)
        if kept is None:
            row = read()
            if row is None:
                return None
            kept = row, self._viewer(token, row)
        return _unexpired(*kept)

    def _kept_under(self, under: Hashable, token: str) -> tuple[tuple[Any, ...], Viewer] | None:
        """The (row, viewer) kept for the cookie, if it was read under `under`; what was kept under anything else
        is dropped."""
        if under != self._under:
            self._kept.clear()
            self._under = under
        return self._kept.get(token)

    def _viewer(self, token: str, row: tuple[Any, ...], *, keep: bool = True) -> Viewer:
        kept = self._kept.get(token)
        if kept is not None and kept[0] == row:
            return kept[1]
        session_id, user_id, _expires_at, display_name, email, role, is_active, organisation_id, segment_id = row
        # A detached User of the columns pages read (name, role, organisation), never added to a session.
        user = User(id=user_id, display_name=display_name, email=email, role=role, is_active=is_active,
                    organisation_id=organisation_id)
        viewer = Viewer(user=user, session_id=session_id, segment_id=segment_id)
        if keep:
            if len(self._kept) >= self.MAX_KEPT:
                self._kept.clear()
            self._kept[token] = (row, viewer)
        return viewer


def _unexpired(row: tuple[Any, ...], viewer: Viewer) -> Viewer | None:
    """A kept viewer while its session's expiry (the row's third column) is ahead, checked per request."""
    return viewer if row[2] > utcnow() else None


def in_session(session: Session, viewer: Viewer) -> Viewer:
    """A kept viewer with its person as a persistent `User` of this session, made of the columns the kept row read
    (no statement; anything else of the person loads when asked): the kept one is shared by the worker's requests
    and belongs to no session."""
    person = viewer.user
    if person is None:
        return viewer
    user = User(id=person.id, display_name=person.display_name, email=person.email, role=person.role,
                is_active=person.is_active, organisation_id=person.organisation_id)
    make_transient_to_detached(user)
    session.add(user)
    return replace(viewer, user=user)


def _session_columns(database: Database, token: str) -> tuple[Any, ...] | None:
    with database.new_session(write=False) as session:
        return accounts.session_columns(session, token)


API_PREFIX = "/api/"
_REFUSED = "The API token is not valid: unknown, revoked or expired, or its owner is no longer staff."


def _refused(detail: str) -> NotAuthenticated:
    return NotAuthenticated(detail, headers={"WWW-Authenticate": 'Bearer realm="ahead"'})


def _token_viewer(request: Request) -> Viewer:
    """The staff member a `Authorization: Bearer ahead_…` header stands for, or 401. The token's last use is
    written at most once a minute, in a short transaction of its own (a read request's stays read-only)."""
    scheme, _, presented = request.headers["authorization"].partition(" ")
    if scheme.lower() != "bearer" or not presented.strip():
        raise _refused("Send a staff API token as `Authorization: Bearer ahead_…`.")
    session: Session = request.state.db.session
    now = utcnow()
    token = tokens.authenticate(session, presented.strip(), now=now)
    if token is None:
        raise _refused(_REFUSED)
    if tokens.needs_touch(token, now):
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            # A write request holds the write lock already (SQLite's BEGIN IMMEDIATE): note it in its own
            # transaction, where a second writer would wait for this one.
            tokens.mark_used(session, token_id=token.id, now=now)
        else:
            _mark_used_apart(request, token.id, now)
    return Viewer.of(token.user, token_scope=token.scope)


def _mark_used_apart(request: Request, token_id: int, now: datetime) -> None:
    """A read request's transaction stays read-only: the last use goes in a short write of its own. It is a
    convenience for the token list, so a busy database skips it (the next request, within a minute, tries
    again) rather than failing the read."""
    own = request.app.state.database.new_session(write=True)
    try:
        tokens.mark_used(own, token_id=token_id, now=now)
        own.commit()
    except SQLAlchemyError:
        own.rollback()
        log.info("API token %s: last use not noted (database busy)", token_id)
    finally:
        own.close()


# Documents the scheme in /openapi.json; the header is read by get_viewer above (never a cookie or query).
staff_token = HTTPBearer(scheme_name="StaffToken", auto_error=False, bearerFormat="ahead_…", description=(
    "A staff API token, created under Admin › API tokens and shown once: `Authorization: Bearer ahead_…`. "
    "Read tokens call the GET endpoints; read-write tokens also the staff writes. Tokens in cookies or query "
    "strings are ignored."))


async def require_token(viewer: CurrentViewer,
                        _: Annotated[HTTPAuthorizationCredentials | None, Security(staff_token)]) -> Viewer:
    """Staff API endpoints: a valid staff token of any scope (a session cookie, even staff's, is not one)."""
    if viewer.token_scope is None:
        raise _refused("This endpoint needs a staff API token: `Authorization: Bearer ahead_…`.")
    return viewer


async def require_write_token(viewer: Annotated[Viewer, Depends(require_token)]) -> Viewer:
    if viewer.token_scope is not TokenScope.write:
        raise Forbidden("This token is read-only: create a read-write token to change anything.")
    return viewer


TokenReader = Annotated[Viewer, Depends(require_token)]
TokenWriter = Annotated[Viewer, Depends(require_write_token)]


async def require_user(viewer: CurrentViewer) -> User:
    if viewer.user is None:
        raise NotAuthenticated("Please sign in to continue.")
    return viewer.user


async def require_staff(request: Request, viewer: CurrentViewer) -> User:
    """Staff area guard. Signed-out people are sent to sign in; customers see a plain 404."""
    if viewer.user is None:
        raise NotAuthenticated("Please sign in with your staff account.")
    if not viewer.is_staff:
        raise NotFound()
    return viewer.user


async def require_admin(user: Annotated[User, Depends(require_staff)]) -> User:
    if not user.is_admin:
        raise NotFound()
    return user


CurrentUser = Annotated[User, Depends(require_user)]
StaffUser = Annotated[User, Depends(require_staff)]
AdminUser = Annotated[User, Depends(require_admin)]


# Reachable without signing in even in private-portal mode: signing in itself, and what it needs; an email's
# unsubscribe and preferences links (signed for their person: they show nothing of the roadmap).
PRIVATE_MODE_OPEN = ("/login", "/auth/", "/sso/", "/logout", "/static/", "/healthz", "/readyz", "/branding",
                     "/invitations/", "/robots.txt", "/favicon", "/unsubscribe/", "/email-preferences/",
                     "/hooks/")  # signed tracker webhooks (app/tech/views.py): a tracker never signs in


async def enforce_private_mode(request: Request) -> None:
    """In private-portal mode every page but the sign-in routes needs a signed-in user."""
    path = request.url.path
    if path.startswith(PRIVATE_MODE_OPEN):
        return
    await _revisions_shared(request)
    if not portal.get_access(request.state.db.session).private_mode:
        return
    viewer = await get_viewer(request)
    if viewer.user is None:
        raise NotAuthenticated("This roadmap is private. Please sign in to see it.")


async def _revisions_shared(request: Request) -> None:
    """On PostgreSQL, a read request (GET, HEAD) takes its revisions from the worker's shared read (`PostgresWatcher`,
    awaited: one read for every request waiting) rather than a statement of its own, which the portal's access
    setting (read under the settings revision, just below) sent first, on the event loop: BEGIN and the read, two
    round trips during which the worker answered nothing else (bench/README.md). A read that fails or takes too long
    leaves the request to read its own, as before; so does a request that writes, or has read them already."""
    holder: RequestSession = request.state.db
    watcher = getattr(request.app.state, "revision_reader", None)
    if (request.method not in ("GET", "HEAD") or holder.is_write or not isinstance(watcher, revision.PostgresWatcher)
            or holder.database is not request.app.state.database or revision.has_read(holder.session)):
        return
    try:
        read = await watcher()
    except Exception:  # the request reads its own (as the kept pages' layer falls back to the app)
        return
    revision.adopt(holder.session, read)


# What app.main declares as the app's own dependencies, in its order: `as_the_app_would` calls them for a plain route.
# tests/voting/test_direct.py fails when the app's list changes, so that it is changed there too.
APP_DEPENDENCIES_CALLED = ("refuse_bad_path", "enforce_private_mode", "refuse_bad_json")


async def as_the_app_would(request: Request,
                           viewer_of: Callable[[Request], Awaitable[Viewer]] = get_viewer) -> Viewer:
    """The app's dependencies called directly, for a busy route served as a plain Starlette route (the vote's, the
    search page): FastAPI solving them cost more CPU than some of those routes' own work. Each raises what it raised
    as a dependency, and the app's handlers answer it. The third, refuse_bad_json, looks only at the JSON bodies of
    routes that declare one, which plain routes do not. Returns the viewer (`viewer_of`: `get_viewer` or one of the
    vote's), taken first, as enforce_private_mode asks for it."""
    await refuse_bad_path(request)
    viewer = await viewer_of(request)
    await enforce_private_mode(request)
    return viewer
