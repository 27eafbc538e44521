"""Dependency aliases: DbSession, CurrentViewer, StaffUser, AdminUser."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.accounts import service as accounts
from app.accounts.models import User
from app.accounts.viewer import ANONYMOUS, Viewer
from app.errors import NotAuthenticated, NotFound
from app.portal import service as portal
from app.security import SESSION_COOKIE, session_cookie_value

__all__ = ["SESSION_COOKIE"]  # its http name; app.security.cookies(request).session is the one in use


async def get_db(request: Request) -> Session:
    session: Session = request.state.db.session
    return session


DbSession = Annotated[Session, Depends(get_db)]


async def get_viewer(request: Request) -> Viewer:
    cached: Viewer | None = request.scope.get("state", {}).get("viewer")
    if cached is not None:
        return cached
    token = session_cookie_value(request)
    viewer = ANONYMOUS
    if token:
        row = accounts.load_session(request.state.db.session, token)
        if row is not None:
            viewer = Viewer.of(row.user, row.id)
    request.state.viewer = viewer
    return viewer


CurrentViewer = Annotated[Viewer, Depends(get_viewer)]


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
                     "/invitations/", "/robots.txt", "/favicon", "/unsubscribe/", "/email-preferences/")


async def enforce_private_mode(request: Request) -> None:
    """In private-portal mode every page but the sign-in routes needs a signed-in user."""
    path = request.url.path
    if path.startswith(PRIVATE_MODE_OPEN):
        return
    if not portal.get_access(request.state.db.session).private_mode:
        return
    viewer = await get_viewer(request)
    if viewer.user is None:
        raise NotAuthenticated("This roadmap is private. Please sign in to see it.")
