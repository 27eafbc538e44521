"""Staff item editor: the item list, the new/edit form, publishing and moving between stages.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from enum import StrEnum
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.accounts.viewer import Viewer
from app.audit import service as audit
from app.audit.labels import AUDIT_FIELDS, AUDIT_VALUES, AUDIT_VERBS
from app.deps import CurrentViewer, DbSession, StaffUser
from app.desk import decisions
from app.desk import service as desk
from app.errors import FormInvalid
from app.feedback import service as feedback
from app.forms import FormModel, choice, read_form
from app.notify import service as notify
from app.organisations import service as organisations
from app.paging import pages_of
from app.parsing import ASCII_DIGITS
from app.roadmap import merge as merging
from app.roadmap import service as roadmap
from app.roadmap.models import Confidence, Item, Stage, Visibility
from app.roadmap.timeframes import Timeframe, quarter_choices
from app.tech import service as tech
from app.tech.trackers import KIND_LABELS
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

PER_PAGE = 50

VISIBILITY_LABELS = {
    Visibility.public: "Public",
    Visibility.customers: "Signed-in customers",
    Visibility.internal: "Internal (staff only)",
}
VISIBILITY_SHORT = {Visibility.public: "Public", Visibility.customers: "Customers", Visibility.internal: "Internal"}
STATUS_LABELS = {roadmap.StaffStatus.all: "All", roadmap.StaffStatus.draft: "Drafts",
                 roadmap.StaffStatus.published: "Published"}

Slug = Annotated[str | None, Query(max_length=60)]


# --- list ---------------------------------------------------------------------------------------------


@router.get("/items", response_class=HTMLResponse)
async def item_list(
    request: Request,
    session: DbSession,
    viewer: CurrentViewer,
    q: Annotated[str, Query(max_length=200)] = "",
    status: Slug = None,
    product: Slug = None,
    stage: Slug = None,
    page: Annotated[int, Query(ge=1, le=10_000), ASCII_DIGITS] = 1,
    sort: Slug = None,
    dir: Slug = None,  # the desk's name for it, so a shared link reads the same
) -> Response:
    try:
        staff_status = roadmap.StaffStatus(status or "all")
    except ValueError:
        staff_status = roadmap.StaffStatus.all
    try:
        staff_sort = roadmap.StaffSort(sort or "updated")
    except ValueError:
        staff_sort = roadmap.StaffSort.updated
    ascending = dir == "asc"  # anything else: the column's first direction, most / heaviest / latest first
    weights = desk.desk_weights(session)
    items, total = roadmap.list_items_for_staff(
        session, q=q, status=staff_status, product=product or None, stage=stage or None,
        page=page, per_page=PER_PAGE, sort=staff_sort, ascending=ascending, ranking=desk.demand_ranking(weights),
    )
    demand = desk.demand_by_item(session, item_ids=[i.id for i in items], weights=weights)
    return render(request, "admin/items/list.html", {
        "items": items, "total": total, "page": page, "pages": pages_of(total, PER_PAGE),
        "q": q, "status": staff_status, "product": product or "", "stage": stage or "",
        "filtered": bool(q.strip() or staff_status is not roadmap.StaffStatus.all or product or stage),
        "products": roadmap.list_products(session), "stages": roadmap.list_stages(session),
        "status_labels": STATUS_LABELS, "visibility_short": VISIBILITY_SHORT,
        "sort": staff_sort, "ascending": ascending, "demand": demand,
    })


# --- new ----------------------------------------------------------------------------------------------


@router.get("/items/new", response_class=HTMLResponse)
async def new_item(request: Request, session: DbSession) -> Response:
    return _render_form(request, session, item=None, form=_blank_form(session))


@router.get("/items/similar", response_class=HTMLResponse)
async def similar_items(request: Request, session: DbSession, viewer: CurrentViewer,
                        q: Annotated[str, Query(max_length=200)] = "") -> Response:
    """Items resembling a new item's title as it is typed (drafts and internal ones too): a fragment."""
    return render(request, "admin/items/_similar.html", _similar(session, viewer, q))


class NewItemAction(StrEnum):
    check = "check"  # Check for similar items (without JavaScript)
    draft = "draft"
    save = "save"  # the item editor's Save: on a new item, a draft
    publish = "publish"


class NewItemButton(FormModel):
    """Which button sent the new-item form; none (a script, or Enter in a browser that sends no button) saves a
    draft, as it always did."""

    action: Annotated[NewItemAction, choice(NewItemAction, "Choose Save draft or Publish.",
                                            empty=NewItemAction.draft)] = NewItemAction.draft


@router.post("/items", response_class=HTMLResponse)
async def create_item(request: Request, session: DbSession, user: StaffUser, viewer: CurrentViewer) -> Response:
    form = await read_form(request, roadmap.ItemCreate)
    button = await read_form(request, NewItemButton)
    if button.data is None:
        errors = dict(button.errors)
        try:
            form.resolve(partial(roadmap.resolve_item, session))
        except FormInvalid as exc:
            errors = {**exc.errors, **errors}  # every message at once, the fields' first
        return _render_form(request, session, item=None, form=form.typed, errors=errors, status_code=422)
    action = button.data.action
    if action is NewItemAction.check:
        # Without JavaScript: the items resembling the title, everything typed kept, nothing saved.
        return _render_form(request, session, item=None, form=form.typed,
                            extra=_similar(session, viewer, form.typed["title"]))
    publish = action is NewItemAction.publish
    try:
        data = form.resolve(partial(roadmap.resolve_item, session))
    except FormInvalid as exc:
        return _render_form(request, session, item=None, form=form.typed, errors=exc.errors, status_code=422)
    item = roadmap.create_item(session, data=data, author=user, publish=publish)
    flash = _published_message(item) if publish else (
        f"Draft saved. “{item.title}” stays off the roadmap until you publish it.")
    return redirect(request, _edit_url(item), flash=flash)


# --- edit ---------------------------------------------------------------------------------------------


@router.get("/items/{public_id}", response_class=HTMLResponse)
async def edit_item(request: Request, session: DbSession, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    return _render_form(request, session, item=item, form=_item_form(item))


def render_edit_page(request: Request, session: Session, item: Item, *, extra: dict[str, Any]) -> Response:
    """The item's page with a refused form of another area (its delivery section's) kept as typed: 422."""
    return _render_form(request, session, item=item, form=_item_form(item), extra=extra, status_code=422)


@router.post("/items/{public_id}", response_class=HTMLResponse)
async def update_item(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    form = await read_form(request, roadmap.ItemUpdate)
    why = await read_form(request, decisions.DecisionWhy)
    told = await read_form(request, notify.Notify)
    rice = await read_form(request, desk.RiceUpdate)
    # The RICE fields are the editor's since issue 10's walk; a form without them (a script, an older page) leaves
    # the estimate as it is rather than clearing it.
    with_rice = "rice_confidence" in (await request.form())
    typed = {**form.typed, **why.typed, "notify": told.typed["notify"], **(rice.typed if with_rice else {})}
    try:
        data = form.resolve(partial(roadmap.resolve_item, session))
        reason = why.valid().why
        wanted = told.valid().wanted
        estimate = rice.valid() if with_rice else None
    except FormInvalid as exc:
        errors = {**exc.errors, **why.errors, **told.errors, **(rice.errors if with_rice else {})}
        return _render_form(request, session, item=item, form=typed, errors=errors, status_code=422)
    old_stage = item.stage
    before = item.updated_at
    decision = decisions.update_item(session, item=item, data=data, why=reason, actor=user)
    if estimate is not None:
        # The demand page's "Save estimate" does the same: one service function, its validation and its audit.
        desk.set_rice(session, item=item, confidence=estimate.rice_confidence, effort=estimate.effort, actor=user)
    if item.updated_at == before:
        return redirect(request, _edit_url(item), flash="Nothing changed.", kind="info")
    flash = "Changes saved."
    if old_stage.id != item.stage_id:
        flash += " " + _moved_message(item, old_stage)
        # The details form offers notify (the default) or not for a stage change, as the Move form does.
        if wanted:
            notify.announce_move(session, item=item, old=old_stage, new=item.stage, actor=user,
                                 change_id=f"d{decision.id}" if decision else f"edit-{item.updated_at.timestamp()}")
            flash += " " + _told_message(notify.audience_of(session, item=item, actor=user).for_stage(item.stage))
        else:
            flash += " Nobody is told by email."
    return redirect(request, _edit_url(item), flash=flash)


@router.post("/items/{public_id}/publish", response_class=HTMLResponse)
async def publish_item(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    roadmap.set_published(session, item=item, published=True, actor=user)
    return redirect(request, _edit_url(item), flash=_published_message(item))


@router.post("/items/{public_id}/unpublish", response_class=HTMLResponse)
async def unpublish_item(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    roadmap.set_published(session, item=item, published=False, actor=user)
    return redirect(request, _edit_url(item),
                    flash=f"Unpublished. “{item.title}” is a draft again and only staff can see it.")


@router.post("/items/{public_id}/stage", response_class=HTMLResponse)
async def move_item(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    form = await request.form()
    raw = form.get("stage_id")
    why = await read_form(request, decisions.DecisionWhy)
    notes = await read_form(request, roadmap.ReleaseNotes)
    told = await read_form(request, notify.Notify)
    stage = next((s for s in roadmap.list_stages(session) if str(s.id) == raw), None)
    if why.data is None or notes.data is None or told.data is None:  # too long: the editor again, as typed
        return _render_form(request, session, item=item, form=_item_form(item), status_code=422, extra={
            "move": {"stage_id": raw or "", "why": why.typed["why"], "release_notes": notes.typed["release_notes"],
                     "notify": told.typed["notify"], "message": told.typed["message"]},
            "move_errors": {**why.errors, **notes.errors, **told.errors}})
    if stage is None:
        return redirect(request, _edit_url(item), flash="Choose a stage to move the item to.", kind="error")
    if stage.id == item.stage_id:
        return redirect(request, _edit_url(item), flash=f"The item is already in {stage.name}.", kind="info")
    if stage.is_released and told.data.message.strip():
        # A release emails its release notes; a message here would go nowhere, so it is refused, kept as typed.
        return _render_form(request, session, item=item, form=_item_form(item), status_code=422, extra={
            "move": {"stage_id": raw or "", "why": why.typed["why"], "release_notes": notes.typed["release_notes"],
                     "notify": told.typed["notify"], "message": told.typed["message"]},
            "move_errors": {"message": f"A release emails its release notes, not this message: put what you want to "
                                       f"say in the release notes, or clear this box to move it to {stage.name}."}})
    old_stage = item.stage
    decision = decisions.move_item(session, item=item, stage=stage, why=why.data.why, actor=user,
                                   release_notes=notes.data.release_notes if "release_notes" in form else None)
    flash = _moved_message(item, old_stage)
    if decision is not None and told.data.wanted:
        notify.announce_move(session, item=item, old=old_stage, new=stage, actor=user, message=told.data.message,
                             change_id=f"d{decision.id}")
        flash += " " + _told_message(notify.audience_of(session, item=item, actor=user).for_stage(stage))
    elif decision is not None:
        flash += " Nobody is told by email."
    return redirect(request, _edit_url(item), flash=flash)


def _told_message(count: int) -> str:
    if count == 0:
        return "Nobody follows it yet, so nobody is told."
    return f"{count} {'person is' if count == 1 else 'people are'} told by email."


# --- helpers ------------------------------------------------------------------------------------------


def _edit_url(item: Item) -> str:
    return f"/admin/items/{item.public_id}"


def _timeframe_value(item: Item) -> str:
    if item.timeframe is Timeframe.quarter and item.target_year and item.target_quarter:
        return f"{item.target_year}-Q{item.target_quarter}"
    return item.timeframe.value if item.timeframe is not Timeframe.quarter else Timeframe.later.value


def _item_form(item: Item) -> dict[str, Any]:
    return {
        "title": item.title, "summary": item.summary, "description": item.description,
        "product_id": str(item.product_id), "stage_id": str(item.stage_id), "timeframe": _timeframe_value(item),
        "confidence": item.confidence.value if item.confidence else "", "visibility": item.visibility.value,
        "release_notes": item.release_notes, "internal_notes": item.internal_notes,
        "tags": [str(t.id) for t in item.tags], "segments": [str(s.id) for s in item.segments], "why": "",
        "rice_confidence": str(item.rice_confidence) if item.rice_confidence is not None else "",
        "effort": desk.plain(item.effort) if item.effort is not None else "",
    }


def _blank_form(session: Session) -> dict[str, Any]:
    products = roadmap.list_products(session)
    stages = roadmap.list_stages(session)
    return {
        "product_id": str(products[0].id) if len(products) == 1 else "",
        "stage_id": str(stages[0].id) if stages else "",
        "timeframe": Timeframe.later.value, "confidence": "", "visibility": Visibility.public.value, "tags": [],
        "segments": [],
    }


def _timeframe_options(current: str) -> list[tuple[str, str]]:
    options = [("now", "Now"), ("next", "Next"), ("later", "Later")]
    options += [(f"{y}-Q{q}", f"{y} Q{q}") for y, q in quarter_choices()]
    # An item aimed at a quarter that has passed keeps it until someone chooses another.
    if current and current not in {value for value, _ in options} and len(current) == 7 and current[4:6] == "-Q":
        options.insert(3, (current, current.replace("-", " ")))
    return options


def _similar(session: Session, viewer: Viewer, title: str) -> dict[str, Any]:
    return {"suggestions": feedback.similar_items(session, viewer, title=title), "checked": True,
            "asked": bool(feedback.similar_words(title))}


def _render_form(request: Request, session: Session, *, item: Item | None, form: dict[str, Any],
                 errors: dict[str, str] | None = None, status_code: int = 200,
                 extra: dict[str, Any] | None = None) -> Response:
    products = roadmap.list_products(session)
    stages = roadmap.list_stages(session)
    product_options = [("", "Choose a product")] if not form.get("product_id") else []
    context: dict[str, Any] = {
        "item": item, "form": form, "errors": errors or {},
        "products": products, "stages": stages, "tags": roadmap.list_tags(session),
        "segments": organisations.list_segments(session),
        "product_options": product_options + [(str(p.id), p.name) for p in products],
        "stage_options": [(str(s.id), s.name) for s in stages],
        "timeframe_options": _timeframe_options(form.get("timeframe", "")),
        "confidence_options": [("", "—")] + [(c.value, c.value) for c in Confidence],
        "visibility_options": [(v.value, label) for v, label in VISIBILITY_LABELS.items()],
        "visibility_labels": VISIBILITY_LABELS,
        **(extra or {}),
    }
    if item is not None:
        context["timeline"] = roadmap.get_timeline(session, item)
        context["events"] = audit.list_events_for(session, entity=item, limit=10)
        context.update(audit_verbs=AUDIT_VERBS, audit_fields=AUDIT_FIELDS, audit_values=AUDIT_VALUES)
        context["merged"] = merging.current_merge(session, item=item)
        context["decisions"] = decisions.list_for_item(session, item=item)
        # How much it is wanted, in the desk's default window: the item's desk row, read from the aggregates (the
        # people themselves are on its demand page; listing them here read every vote of the item, 1.3 s for the
        # top item of bench/desk.py's million votes).
        window = desk.DeskQuery()
        context.update(demand_row=desk.item_row(session, item=item, query=window, weights=desk.desk_weights(session)),
                       demand_window=desk.WINDOW_LABELS[window.window].lower(), demand_number=desk.fixed)
        context.setdefault("move", {"stage_id": str(item.stage_id), "why": ""})
        actor = request.state.viewer.user
        context["audience"] = notify.audience_of(session, item=item, actor=actor)
        context["stage_kinds"] = {s.id: notify.stage_kind(s) for s in stages}
        own, via = tech.links_of_item(session, item)
        delivery = tech.get_delivery(session, item)
        context.setdefault("delivery_form", {"show_progress": delivery.show_progress,
                                             "started_stage_id": str(delivery.started_stage_id or ""),
                                             "done_stage_id": str(delivery.done_stage_id or "")})
        progress = tech.progress_of(own + via)
        context.update(initiatives=tech.initiatives_for_item(session, item), own_links=own, via_links=via,
                       progress=progress, regression=tech.delivery_regression(item, progress),
                       kind_labels=KIND_LABELS,
                       initiative_status_labels=tech.STATUS_LABELS)
        return render(request, "admin/items/edit.html", context, status_code=status_code)
    return render(request, "admin/items/new.html", context, status_code=status_code)


def _published_message(item: Item) -> str:
    if item.visibility is Visibility.public:
        return f"Published. “{item.title}” is now on the public roadmap."
    if item.visibility is Visibility.customers:
        who = " and ".join(s.name for s in item.segments)
        return (f"Published for signed-in customers{f' of {who}' if who else ''}. Visitors and other "
                f"customers cannot find “{item.title}”.")
    return f"Published internally. “{item.title}” is visible to staff only."


def _moved_message(item: Item, old: Stage) -> str:
    text = f"Moved from {old.name} to {item.stage.name}."
    if item.stage.is_released and item.is_published and item.visibility is Visibility.public:
        text += " It now appears on the changelog."
    return text

