"""Typed errors raised by services; one handler maps them to an HTML page or a JSON body."""

from __future__ import annotations

from typing import Any


class AppError(Exception):
    status_code = 400
    title = "Something is not right"

    def __init__(self, detail: str = "", *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.headers = headers or {}

    @property
    def code(self) -> str:
        return type(self).__name__.removesuffix("Error").lower() or "error"


class NotFound(AppError):
    """Missing, or hidden from this viewer: the two must be indistinguishable."""

    status_code = 404
    title = "Page not found"

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or "There is nothing at this address.")

    @property
    def code(self) -> str:
        return "not_found"


class NotAuthenticated(AppError):
    status_code = 401
    title = "Sign in required"

    @property
    def code(self) -> str:
        return "not_authenticated"


class Forbidden(AppError):
    status_code = 403
    title = "Not allowed"


class Conflict(AppError):
    status_code = 409
    title = "Conflict"


class RateLimited(AppError):
    status_code = 429
    title = "Too many requests"

    def __init__(self, detail: str = "", *, retry_after: int = 60) -> None:
        super().__init__(
            detail or f"You are going a little fast. Please wait {wait_words(retry_after)} and try again.",
            headers={"Retry-After": str(retry_after)},
        )

    @property
    def code(self) -> str:
        return "rate_limited"


def wait_words(seconds: int) -> str:
    """A wait as a person reads it: "a minute" up to one (a limit per minute is most of them), then "about 5
    minutes", "about 3 hours", "about 2 days" (rounded up: waiting what it says is enough)."""
    if seconds <= 60:
        return "a minute"
    minutes = -(-seconds // 60)
    if minutes <= 90:
        return f"about {minutes} minutes"
    hours = -(-seconds // 3600)
    if hours <= 36:
        return f"about {hours} hours"
    return f"about {-(-seconds // 86400)} days"


class CsrfFailed(AppError):
    status_code = 403
    title = "This form can no longer be sent"

    def __init__(self) -> None:
        # What makes a token stop working, in a person's words: it is bound to the session and the CSRF cookie
        # (app/security.py), and has no time limit of its own.
        super().__init__(
            "Nothing was changed. The page was opened before you signed in or out (perhaps in another tab) or "
            "before your browser was restarted, or the form came from another site. Go back, copy anything you "
            "typed, reload the page and send it again."
        )

    @property
    def code(self) -> str:
        return "csrf_failed"


class CrossOriginRefused(AppError):
    """An unsafe request whose Origin (or Referer) is not the portal's own address."""

    status_code = 403
    title = "Sent from another site"

    def __init__(self) -> None:
        super().__init__(
            "This request came from a page that is not part of this portal, so it was not accepted and nothing "
            "was changed. If you meant to do this, open the portal itself, reload the page and try again."
        )

    @property
    def code(self) -> str:
        return "cross_origin"


class FormInvalid(AppError):
    """Field-level validation errors: `errors` maps a field name to a message."""

    status_code = 422
    title = "Please check the form"

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors

    @property
    def code(self) -> str:
        return "invalid"

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "detail": self.detail, "fields": self.errors}


class DatabaseBusy(AppError):
    """The database would not wait any longer (a lock held by someone else, or a statement over its time
    limit); the request's transaction was rolled back. Made from the driver's error by app.db.database_busy."""

    status_code = 503
    title = "Busy, please try again"
    LOCKED = ("Someone else is changing the same thing right now (for example, staff merging this item). "
              "Nothing was saved; please try again in a few seconds.")
    TOO_SLOW = "This took too long, so it was stopped. Nothing was saved; please try again in a few seconds."

    def __init__(self, detail: str = "", *, retry_after: int = 5) -> None:
        super().__init__(detail or self.LOCKED, headers={"Retry-After": str(retry_after)})

    @property
    def code(self) -> str:
        return "busy"

    @property
    def waited_for_lock(self) -> bool:
        """A lock held by someone else (not a slow statement): the same request may succeed once it is released."""
        return self.detail == self.LOCKED
