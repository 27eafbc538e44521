"""Email (admins): the SMTP settings in force (password masked), a test email that reports the server's exact
answer, and the outbox's recent deliveries and failures with their reasons.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app import security
from app.deps import AdminUser, DbSession
from app.forms import read_form
from app.outbox import mailer
from app.outbox import service as outbox
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

SHOWN = 50  # deliveries listed
VIEWS = ("all", "problems")


def _page(request: Request, session: Session, *, view: str = "all", status_code: int = 200,
          **extra: Any) -> Response:
    settings = request.app.state.settings
    jobs = outbox.recent(session, problems=view == "problems", limit=SHOWN)
    return render(request, "admin/email.html", {
        "smtp": mailer.smtp_summary(settings), "settings": settings, "counts": outbox.counts(session),
        "jobs": jobs, "view": view if view in VIEWS else "all", "shown": SHOWN,
        "reached_at": security.reached_at(request), "base_url_differs": security.base_url_differs(request), **extra,
    }, status_code=status_code)


@router.get("/email", response_class=HTMLResponse)
async def email_page(request: Request, session: DbSession, admin: AdminUser, show: str = "all") -> Response:
    return _page(request, session, view=show, form={"to": admin.email})


@router.post("/email/test", response_class=HTMLResponse)
async def send_test(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, outbox.SmtpCheck)
    if form.data is None:
        return _page(request, session, status_code=422, errors=form.errors, form=form.typed)
    to = form.data.to
    # Sent now, not queued: the admin wants the server's answer. No transaction (no SQLite write lock) while
    # the server takes its time.
    request.state.db.end_transaction()
    accepted, answer = await mailer.send_test(request.app.state.settings, to=to)
    if accepted:
        return redirect(request, "/admin/email", flash=f"Test email sent to {to}. The server answered: {answer}")
    return redirect(request, "/admin/email", kind="error", flash=f"The test email to {to} was not sent. {answer}")


@router.post("/email/retry", response_class=HTMLResponse)
async def retry(request: Request, session: DbSession, admin: AdminUser) -> Response:
    count = outbox.retry(session, job_ids=None)
    if not count:
        return redirect(request, "/admin/email", kind="info", flash="Nothing was waiting to be retried.")
    return redirect(request, "/admin/email", flash=(
        f"{count} deliver{'y' if count == 1 else 'ies'} queued again; they go out within a few seconds."))
