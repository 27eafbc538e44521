"""Customer pages of the feedback domain: submitting an idea, similar-item suggestions, and withdrawing
a vote the team recorded for you (listed on /me)."""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from math import ceil
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response

from app.accounts.views import client_ip
from app.db import run_off_loop
from app.deps import CurrentUser, CurrentViewer, DbSession
from app.errors import FormInvalid, RateLimited
from app.feedback import service as feedback
from app.forms import FormModel, choice, read_form
from app.portal.service import counts_shown
from app.roadmap import service as roadmap
from app.security import verify_csrf
from app.web import redirect, render

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])

def _form_page(request: Request, session: Any, *, form: dict[str, str], status_code: int = 200,
               headers: dict[str, str] | None = None, **extra: Any) -> Response:
    return render(request, "feedback/new.html", {
        "form": form, "products": roadmap.list_products(session),
        "max_title": feedback.MAX_TITLE, "max_body": feedback.MAX_BODY, **extra,
    }, status_code=status_code, headers=headers)


@router.get("/ideas/new", response_class=HTMLResponse)
async def new_idea(request: Request, session: DbSession, user: CurrentUser,
                   title: Annotated[str, Query(max_length=feedback.MAX_TITLE)] = "") -> Response:
    return _form_page(request, session, form={"title": title, "body": "", "product_id": ""})


class IdeaAction(StrEnum):
    check = "check"  # Check for similar items (without JavaScript)
    submit = "submit"


class IdeaButton(FormModel):
    """Which button sent the idea form; none (Enter in a browser that sends no button) sends the idea."""

    action: Annotated[IdeaAction, choice(IdeaAction, "Choose Send to the product team or Check for similar items.",
                                         empty=IdeaAction.submit)] = IdeaAction.submit


@router.post("/ideas", response_class=HTMLResponse)
async def submit_idea(request: Request, session: DbSession, user: CurrentUser, viewer: CurrentViewer) -> Response:
    submitted = await read_form(request, feedback.IdeaCreate)
    form, title = submitted.typed, submitted.typed["title"]
    button = await read_form(request, IdeaButton)
    if button.data is None:
        return _form_page(request, session, form=form, errors=button.errors, status_code=422)
    if button.data.action is IdeaAction.check:
        # Without JavaScript: show what resembles the title, keep everything typed.
        return _form_page(request, session, form=form, checked=True, asked=bool(feedback.similar_words(title)),
                          suggestions=feedback.similar_items(session, viewer, title=title))
    try:
        data = submitted.resolve(partial(feedback.resolve_idea, session))
    except FormInvalid as exc:
        return _form_page(request, session, form=form, errors=exc.errors, status_code=422,
                          suggestions=feedback.similar_items(session, viewer, title=title))
    settings = request.app.state.settings
    limiter = request.app.state.limiter
    try:
        limiter.hit(settings.idea_rate_limit, f"idea:user:{user.id}")
        limiter.hit(settings.idea_ip_rate_limit, f"idea:ip:{client_ip(request)}")
    except RateLimited as exc:
        wait = max(1, ceil(int(exc.headers.get("Retry-After", "60")) / 60))
        message = (f"You have sent several ideas in a short time. Please wait about {wait} minute"
                   f"{'' if wait == 1 else 's'} and send this one again: your text is still here.")
        return _form_page(request, session, form=form, limited=message, status_code=429, headers=exc.headers)
    feedback.submit_idea(session, author=user, data=data)
    return redirect(request, "/me#your-feedback",
                    flash="Thank you. Your idea has reached the product team; you can see what becomes of it here.")


# The same address answers HTML or JSON by the request's Accept: a cache must key on it too.
_BY_ACCEPT = {"Vary": "Accept"}


@router.get("/ideas/similar")
async def similar(request: Request, session: DbSession, viewer: CurrentViewer,
                  q: Annotated[str, Query(max_length=feedback.MAX_TITLE)] = "") -> Response:
    """Items resembling a title being typed, only those the viewer may see: an HTML fragment, or JSON
    (`votes` is null when the portal hides vote counts from this viewer)."""
    # A search: in a thread, the event loop free meanwhile (app.db.OffLoopMiddleware, as /search)
    suggestions = await run_off_loop(request, lambda: feedback.similar_items(session, viewer, title=q))
    if "application/json" in request.headers.get("accept", "").split(",")[0]:
        shown = counts_shown(session, viewer)
        return JSONResponse([
            {"title": s.item.title, "url": s.item.path, "product": s.item.product.name, "stage": s.item.stage.name,
             "votes": s.item.vote_count if shown else None}
            for s in suggestions
        ], headers=_BY_ACCEPT)
    return render(request, "feedback/_similar.html", {"suggestions": suggestions, "checked": True,
                                                      "asked": bool(feedback.similar_words(q))}, headers=_BY_ACCEPT)


@router.post("/me/reasons/{feedback_id}/delete", response_class=HTMLResponse)
async def delete_reason(request: Request, session: DbSession, viewer: CurrentViewer, user: CurrentUser,
                        feedback_id: str) -> Response:
    feedback.delete_own_reason(session, viewer=viewer, feedback_id=feedback.parse_id(feedback_id))
    return redirect(request, "/me#your-feedback", flash="Your reason is deleted.")


@router.post("/me/recorded-votes/{vote_id}/withdraw", response_class=HTMLResponse)
async def withdraw_recorded_vote(request: Request, session: DbSession, viewer: CurrentViewer,
                                 user: CurrentUser, vote_id: str) -> Response:
    item = feedback.withdraw_recorded_vote(session, viewer=viewer, vote_id=feedback.parse_id(vote_id))
    what = f"for “{item.title}”" if item is not None else ""
    return redirect(request, "/me#recorded-votes", flash=f"Your vote {what} is withdrawn.".replace("  ", " "))
