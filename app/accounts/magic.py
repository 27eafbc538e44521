"""Email magic links: a single-use sign-in link, valid 15 minutes, confirmed with a POST.

Opening the link shows a page with a button; only the button's POST uses the link up, so mail
scanners that fetch every link in a message do not spend it. The request page answers the same
whatever the address, and a new address gets its account only when the link is used (which proves
the mailbox is theirs).
"""

from __future__ import annotations

import hashlib
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import HTMLResponse, Response

from app.accounts import service as accounts
from app.accounts.models import IdentityKind
from app.accounts.views import client_ip, safe_next, signed_in_response, staff_account_refused
from app.config import Settings
from app.deps import DbSession
from app.errors import RateLimited
from app.forms import read_values
from app.outbox import service as outbox
from app.portal import service as portal
from app.ratelimit import RateLimiter
from app.security import verify_csrf
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
log = logging.getLogger("ahead.accounts")


@router.get("/login/email", response_class=HTMLResponse)
async def request_form(request: Request, next: str | None = None) -> Response:
    return render(request, "accounts/magic_request.html", {"next": safe_next(next, "")})


@router.post("/login/email", response_class=HTMLResponse)
async def request_link(
    request: Request,
    session: DbSession,
    link_email: Annotated[str, Form(max_length=320)] = "",
    next: Annotated[str, Form()] = "",  # one too long for any address is dropped by the model
) -> Response:
    settings: Settings = request.app.state.settings
    limiter, ip = request.app.state.limiter, client_ip(request)
    _limit(limiter, settings.magic_link_ip_rate_limit, f"magic:ip:{ip}")
    form = read_values(accounts.MagicLinkRequest, {"link_email": link_email, "next": next})
    sent = form.data or form.partial
    next = sent.next if sent is not None else ""
    if form.data is None:
        return render(request, "accounts/magic_request.html",
                      {"next": safe_next(next, ""), "errors": form.errors, "form": form.typed}, status_code=422)
    email = form.data.link_email
    # Per address and network first: one network asking too often uses up its own allowance, not the address's.
    # Per address from anywhere: a mailbox gets at most that many links, whoever asks for them.
    _limit(limiter, settings.magic_link_rate_limit, f"magic:email-ip:{email}|{ip}")
    _limit(limiter, settings.magic_link_address_rate_limit, f"magic:email:{email}")

    owner = accounts.get_user_by_email(session, email)
    if owner is not None and owner.is_staff_account:
        # Staff sign in by password (or a provider mapped to staff): no link. The answer is the same as for any
        # address, so the form does not tell who is staff; the operator reads it here.
        log.warning("email link not sent: %s belongs to a staff account (asked from %s)", email, ip)
    elif accounts.magic_link_allowed(session, email=email, private_mode=portal.get_access(session).private_mode):
        token = accounts.create_magic_link(session, email=email, next_path=safe_next(next, "/"))
        context = {
            "portal_name": portal.get_branding(session).portal_name,
            "link": f"{settings.base_url}/login/email/{token}",
            "minutes": accounts.MAGIC_LINK_MINUTES,
        }
        # Queued in the link's own transaction (app/outbox): sent by the worker once it is committed, which wakes
        # it at once; no mail goes out for a link that was rolled back, the request never waits for SMTP, and
        # the answer takes as long whatever the address. The key names the link, not its secret.
        outbox.enqueue_email(session, to=email, template="magic_link", context=context,
                             key=f"magic_link:{hashlib.sha256(token.encode()).hexdigest()[:32]}")
    return redirect(request, "/login/email/sent")


@router.get("/login/email/sent", response_class=HTMLResponse)
async def link_sent(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    return render(request, "accounts/magic_sent.html", {
        "minutes": accounts.MAGIC_LINK_MINUTES,
        "mail_to_log": not settings.smtp_url and not settings.is_production,
    })


@router.get("/login/email/{token}", response_class=HTMLResponse)
async def confirm_form(request: Request, session: DbSession, token: str) -> Response:
    link = accounts.find_magic_link(session, token)
    if link is None:
        return _link_unusable(request)
    return render(request, "accounts/magic_confirm.html", {"token": token, "email": link.email})


@router.post("/login/email/{token}", response_class=HTMLResponse)
async def sign_in_with_link(request: Request, session: DbSession, token: str) -> Response:
    link = accounts.consume_magic_link(session, token=token)
    if link is None:
        return _link_unusable(request)
    # The portal may have turned private since the link was sent: check again for new addresses.
    if not accounts.magic_link_allowed(session, email=link.email,
                                       private_mode=portal.get_access(session).private_mode):
        raise accounts.SignInFailed("This portal is private and there is no account for this email address. "
                                    "Ask the product team to invite you, or sign in with your company account.")
    try:
        user = accounts.sign_in_identity(session, claims=accounts.IdentityClaims(
            kind=IdentityKind.email, issuer="email", subject=link.email, email=link.email, email_verified=True,
        ))
    except accounts.StaffAccountRefused as exc:  # a link sent before the address became staff
        return staff_account_refused(request, exc, method="email link", how="an email sign-in link")
    return signed_in_response(request, session, user=user, next_url=safe_next(link.next_path, "/"),
                              flash=f"You are signed in as {user.email}.")


def _link_unusable(request: Request) -> Response:
    """Used, expired and unknown links look the same; nothing is written (4xx rolls back)."""
    return render(request, "accounts/magic_invalid.html", {"minutes": accounts.MAGIC_LINK_MINUTES, "next": ""},
                  status_code=410)


def _limit(limiter: RateLimiter, limit: str, key: str) -> None:
    try:
        limiter.hit(limit, key)
    except RateLimited as exc:
        wait = int(exc.headers.get("Retry-After", "60"))
        minutes = max(1, -(-wait // 60))
        raise RateLimited(
            "Too many sign-in links were asked for, for this address or from your network. "
            f"Please wait {minutes} minute{'s' if minutes != 1 else ''} and try again, "
            "or use the most recent link we sent you.",
            retry_after=wait,
        ) from None

