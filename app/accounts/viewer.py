"""Who is looking: the one object every visibility decision starts from."""

from __future__ import annotations

from dataclasses import dataclass

from app.accounts.models import TokenScope, User


@dataclass(frozen=True, slots=True)
class Viewer:
    user: User | None = None
    session_id: str | None = None
    # The segment of the customer's organisation: decides which segment-limited items they see.
    segment_id: int | None = None
    # Set when the request came with a staff API token (`Authorization: Bearer …`) rather than a session.
    token_scope: TokenScope | None = None

    @classmethod
    def of(cls, user: User, session_id: str | None = None, *, token_scope: TokenScope | None = None) -> Viewer:
        """The viewer for a user whose organisation is loaded."""
        organisation = user.organisation
        return cls(user=user, session_id=session_id, token_scope=token_scope,
                   segment_id=organisation.segment_id if organisation is not None else None)

    @property
    def is_authenticated(self) -> bool:
        return self.user is not None and self.user.is_active

    @property
    def is_staff(self) -> bool:
        return self.user is not None and self.user.is_staff

    @property
    def is_admin(self) -> bool:
        return self.user is not None and self.user.is_admin


ANONYMOUS = Viewer()
