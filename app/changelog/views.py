"""The changelog's public pages: the list (overall or one product's), an entry's page, and the Atom feeds.

The feeds are built for a signed-out visitor, whoever asks: a feed reader must never be handed what a
signed-in person happens to see. `/changelog.atom` is the overall feed, `/changelog.atom?product=<slug>`
one product's.

Subscribing by email (app/notify/changelog.py has the rules): a signed-in person's Subscribe button sets their
changelog choice; a visitor's address gets a link to confirm, and only the link's POST subscribes it. The
answer to a visitor's request is the same whatever the address.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.orm import Session

from app.accounts.viewer import ANONYMOUS, Viewer
from app.accounts.views import client_ip
from app.changelog import service as changelog
from app.config import Settings
from app.deps import CurrentUser, CurrentViewer, DbSession
from app.errors import RateLimited
from app.forms import FormModel, choice, read_form
from app.notify import changelog as subscriptions
from app.notify.models import Delivery
from app.pagecache import PageCache, at_canonical, cached_render_off_loop, canonical_address
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import service as roadmap
from app.security import LINK_PAGE_HEADERS, verify_csrf
from app.web import redirect, render

router = APIRouter(include_in_schema=False)
_CSRF = [Depends(verify_csrf)]
_PRIVATE = LINK_PAGE_HEADERS

Slug = Annotated[str | None, Query(max_length=60, pattern=r"^[a-z0-9-]*$")]


# The changelog's pages and feeds are kept (app/pagecache.py) and made in a thread (app.db.OffLoopMiddleware): each
# took 10-300 ms of the worker (the sitemap lists every public item), and a flood of any one of them, made on the
# event loop per request, held the kept board waiting behind it. What is shown depends on the content, the
# audience and the time (a scheduled entry appears when its time comes): kept per content revision and minute.
LIST_TEMPLATE = "changelog/list.html"
SUBSCRIBE_TEMPLATE = "changelog/subscribe.html"
ENTRY_TEMPLATE = "changelog/entry.html"
FEED_TEMPLATE = "changelog/feed.atom"
ATOM = "application/atom+xml; charset=utf-8"


@router.get("/changelog", response_class=HTMLResponse)
async def changelog_page(request: Request, session: DbSession, viewer: CurrentViewer, product: Slug = None,
                         page: Annotated[int, Query(ge=1, le=10_000), ASCII_DIGITS] = 1) -> Response:
    # Kept as for the address that says only what the page shows; a page past the end leads to the last
    request = at_canonical(request, [("product", product), ("page", str(page) if page > 1 else None)])

    def build(session: Session) -> dict[str, object] | Response:
        context = _list_context(session, viewer, product=product, page=page)
        _changes_at_next_publication(request, session)
        last = context["pages"]
        if isinstance(last, int) and page > last:  # past the end: its last page
            return RedirectResponse(canonical_address("/changelog", [("product", product),
                                                                     ("page", str(last) if last > 1 else None)]),
                                    status_code=302)
        return context

    # A signed-in person's Subscribe control is theirs: kept for visitors only
    return await cached_render_off_loop(request, session, viewer, LIST_TEMPLATE, build,
                                        params=frozenset({"product", "page"}), signed_in_too=False)


def _changes_at_next_publication(request: Request, session: Session) -> None:
    """The kept pages are not answered once a scheduled entry is published (read after what the page shows, so a
    page made as it is published is dropped too): it appears on the changelog and its feed at its time, not when
    the page's minute next turns (a walk-through: up to a minute late, answered 304 meanwhile)."""
    pages: PageCache | None = getattr(request.app.state, "pages", None)
    if pages is not None:
        pages.changes_at(changelog.next_publication(session))


def _list_context(session: Session, viewer: Viewer, *, product: str | None = None, page: int = 1
                  ) -> dict[str, object]:
    chosen = changelog.get_product(session, product)
    releases, total = changelog.list_releases(session, viewer, page=page, product=chosen)
    return {
        "releases": releases, "total": total, "page": page, "pages": pages_of(total, changelog.PAGE_SIZE),
        "products": roadmap.list_products(session), "product": chosen, **_subscription(session, viewer),
    }


def _subscribe_page(request: Request, session: Session, viewer: Viewer, *, errors: dict[str, str] | None = None,
                    email: str = "", refused: str = "", status_code: int = 200,
                    headers: dict[str, str] | None = None) -> Response:
    """The visitors' Subscribe form, as asked for or as a refused one answers (the typed address kept, the refusal
    said at the top: an invalid address, too many requests); a signed-in person's own button."""
    return render(request, SUBSCRIBE_TEMPLATE, {"subscribe_errors": errors or {}, "subscribe_refused": refused,
                                                "subscribe_email": email, **_subscription(session, viewer)},
                  status_code=status_code, headers={"X-Robots-Tag": "noindex", **(headers or {})})


def _subscription(session: Session, viewer: Viewer) -> dict[str, object]:
    """What the Subscribe control shows: the signed-in person's choice, or the visitors' form."""
    if viewer.user is None:
        return {"changelog_choice": None}
    return {"changelog_choice": subscriptions.choice_of(session, user=viewer.user).value}


@router.get("/changelog.atom")
async def changelog_atom(request: Request, session: DbSession, product: Slug = None) -> Response:
    def build(session: Session) -> dict[str, object]:
        chosen = changelog.get_product(session, product)
        releases, _ = changelog.list_releases(session, ANONYMOUS, per_page=changelog.FEED_SIZE, product=chosen)
        _changes_at_next_publication(request, session)
        return {"releases": releases, "updated": changelog.latest_update(releases), "product": chosen}

    # A visitor's feed, whoever asks: kept as the visitors' (a feed reader sends no cookie: answered before the stack),
    # as for the address naming only the product read
    request = at_canonical(request, [("product", product)])
    return await cached_render_off_loop(request, session, ANONYMOUS, FEED_TEMPLATE, build,
                                        params=frozenset({"product"}), media_type=ATOM)


@router.get("/changelog/subscribe", response_class=HTMLResponse)
async def subscribe_page(request: Request, session: DbSession, viewer: CurrentViewer) -> Response:
    """The visitors' form to subscribe by email. The changelog's pages link to it rather than hold it: a visitor's
    page with a form needs a CSRF cookie and token, and such a page is never kept finished, shared by a CDN or
    answered 304 (a walk-through's uptime checks and link checkers got a new cookie and ETag on every request)."""
    return _subscribe_page(request, session, viewer)


@router.get("/changelog/{public_id}", response_class=HTMLResponse)
@router.get("/changelog/{public_id}/{slug}", response_class=HTMLResponse)
async def entry_page(request: Request, session: DbSession, viewer: CurrentViewer, public_id: str,
                     slug: str | None = None) -> Response:
    def build(session: Session) -> dict[str, object] | Response:
        release = changelog.get_release(session, viewer, public_id)
        # One address per entry: a made-up or outdated slug leads to it (and is not kept as a page of its own)
        if release.entry is not None and (slug or "") != release.entry.slug:
            return RedirectResponse(release.path, status_code=301)
        return {"release": release, **_subscription(session, viewer)}

    return await cached_render_off_loop(request, session, viewer, ENTRY_TEMPLATE, build, signed_in_too=False)


# --- subscribing by email ---------------------------------------------------------------------------------


class ChangelogChoice(FormModel):
    """A signed-in person's Subscribe / Unsubscribe button."""

    delivery: Annotated[Delivery, choice(Delivery, "Choose right away, weekly or never.")] = Delivery.immediately


@router.post("/changelog/subscription", response_class=HTMLResponse, dependencies=_CSRF)
async def choose_changelog(request: Request, session: DbSession, user: CurrentUser) -> Response:
    form = await read_form(request, ChangelogChoice)
    delivery = form.data.delivery if form.data is not None else Delivery.immediately
    subscriptions.choose(session, user=user, delivery=delivery)
    flash = {Delivery.immediately: f"Subscribed: each new changelog entry is emailed to {user.email}.",
             Delivery.weekly: "Subscribed: new changelog entries come in your weekly digest.",
             Delivery.never: "Unsubscribed: you get no more changelog emails."}[delivery]
    return redirect(request, "/changelog#changelog-subscribe", flash=flash)


def _limit(request: Request, settings: Settings, email: str) -> None:
    limiter, ip = request.app.state.limiter, client_ip(request)
    try:
        # Per network first (many addresses from one place), then per address from anywhere: a mailbox gets at
        # most that many confirmation emails, whoever asks, and whether it is subscribed or not.
        limiter.hit(settings.changelog_subscribe_ip_rate_limit, f"changelog-sub:ip:{ip}")
        limiter.hit(settings.changelog_subscribe_rate_limit, f"changelog-sub:email:{email}")
    except RateLimited as exc:
        raise RateLimited("Too many subscription requests, for this address or from your network. Please try "
                          "again later, or use the link in the email we sent.",
                          retry_after=int(exc.headers.get("Retry-After", "60"))) from None


@router.post("/changelog/subscribe", response_class=HTMLResponse, dependencies=_CSRF)
async def subscribe_by_email(request: Request, session: DbSession, viewer: CurrentViewer) -> Response:
    """A visitor's address: a link to confirm is emailed to it; the answer is the same for every address."""
    settings: Settings = request.app.state.settings
    form = await read_form(request, subscriptions.SubscribeRequest)
    if form.data is None:
        return _subscribe_page(request, session, viewer, errors=form.errors, email=form.typed.get("email", ""),
                               status_code=422)
    email = form.data.email
    try:
        _limit(request, settings, email)
    except RateLimited as refusal:  # the form again, with what was typed (a walk-through's 429 page lost it)
        return _subscribe_page(request, session, viewer, email=form.typed.get("email", ""), refused=refusal.detail,
                               status_code=429, headers={"Retry-After": refusal.headers["Retry-After"]})
    subscriptions.ask_to_confirm(session, settings=settings, email=email)
    # Back to the form's page, whose message is in view (the changelog's, at its top, was not: the page opened at its
    # Subscribe card, far below)
    return redirect(request, "/changelog/subscribe",
                    flash=f"Almost done: we sent a link to {email}. Open it and press Confirm to get new changelog "
                          f"entries by email; nothing is sent before that. The link works for "
                          f"{subscriptions.CONFIRM_HOURS} hours.")


def _confirmation(request: Request, session: Session, token: str) -> subscriptions.Confirmation | None:
    return subscriptions.read_confirmation(session, secret=request.app.state.settings.secret_key, token=token)


def _unusable(request: Request) -> Response:
    """Used, expired and forged links look the same; nothing is written."""
    return render(request, "changelog/confirm.html", {"unusable": True, "hours": subscriptions.CONFIRM_HOURS},
                  status_code=410, headers=_PRIVATE)


@router.get("/changelog-subscription/{token}", response_class=HTMLResponse)
async def confirm_page(request: Request, session: DbSession, token: str) -> Response:
    """A button, not the subscription itself: mail scanners that open every link subscribe nobody."""
    confirmation = _confirmation(request, session, token)
    if confirmation is None:
        return _unusable(request)
    return render(request, "changelog/confirm.html", {"token": token, "email": confirmation.email},
                  headers=_PRIVATE)


@router.post("/changelog-subscription/{token}", response_class=HTMLResponse, dependencies=_CSRF)
async def confirm_subscription(request: Request, session: DbSession, token: str) -> Response:
    confirmation = _confirmation(request, session, token)
    if confirmation is None:
        return _unusable(request)
    subscriptions.confirm(session, confirmation)
    return render(request, "changelog/confirm.html", {"done": True, "email": confirmation.email},
                  headers=_PRIVATE)
