"""Who is looking: the one object every visibility decision starts from."""

from __future__ import annotations

from dataclasses import dataclass

from app.accounts.models import User


@dataclass(frozen=True, slots=True)
class Viewer:
    user: User | None = None
    session_id: str | None = None

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
