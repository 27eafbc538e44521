"""The technology roadmap (staff): initiatives (list, timeline, editor), the items they deliver, backlog links
on initiatives and items, an item's delivery settings, and the inbound tracker webhooks with their log.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.admin import items as item_pages
from app.deps import DbSession, StaffUser
from app.errors import FormInvalid, NotFound
from app.forms import read_form
from app.roadmap import service as roadmap
from app.roadmap.models import Item
from app.roadmap.timeframes import quarter_choices
from app.tech import service as tech
from app.tech import trackers
from app.tech.models import REFUSALS_KEPT, HookKind, Initiative, InitiativeStatus, TrackerHook
from app.web import redirect, render

router = APIRouter(include_in_schema=False)

Slug = Annotated[str, Query(max_length=60)]


def _url(initiative: Initiative) -> str:
    return f"/admin/tech/{initiative.id}"


# --- list and timeline ----------------------------------------------------------------------------------


@router.get("/tech", response_class=HTMLResponse)
async def initiative_list(request: Request, session: DbSession, status: Slug = "", owner: Slug = "",
                          product: Slug = "", quarter: Slug = "", view: Slug = "list") -> Response:
    try:
        chosen_status = InitiativeStatus(status) if status else None
    except ValueError:
        chosen_status = None
    owner_id = int(owner) if owner.isascii() and owner.isdigit() and len(owner) < 10 else None
    quarter_value = quarter if quarter == "none" or _is_quarter(quarter) else ""
    filters = tech.InitiativeFilters(status=chosen_status, owner_id=owner_id, product_slug=product,
                                     quarter=quarter_value)
    initiatives = tech.list_initiatives(session, filters)
    links = tech.links_of_initiatives(session, [i.id for i in initiatives])
    progress = {i.id: tech.progress_of(links[i.id]) for i in initiatives}
    timeline: dict[str, list[Initiative]] = {}
    for initiative in initiatives:
        timeline.setdefault(initiative.quarter_label, []).append(initiative)
    quarters = sorted({*tech.quarters_in_use(session), *quarter_choices()})
    return render(request, "admin/tech/list.html", {
        "initiatives": initiatives, "progress": progress, "demand": tech.demand_for(session, initiatives),
        "timeline": timeline, "view": "timeline" if view == "timeline" else "list",
        "status": status if chosen_status else "", "owner": str(owner_id or ""), "product": product,
        "quarter": quarter_value, "filtered": bool(chosen_status or owner_id or product or quarter_value),
        "status_labels": tech.STATUS_LABELS, "staff": tech.list_staff(session),
        "products": roadmap.list_products(session),
        "quarter_options": [(f"{y}-Q{q}", f"{y} Q{q}") for y, q in quarters],
    })


def _is_quarter(value: str) -> bool:
    return len(value) == 7 and value[:4].isdigit() and value[4:6] == "-Q" and value[6] in "1234"


# --- new / edit -----------------------------------------------------------------------------------------


def _form_of(initiative: Initiative) -> dict[str, Any]:
    return dict(tech.initiative_values(initiative))


def _form_context(session: Session, form: dict[str, Any]) -> dict[str, Any]:
    quarters = [(f"{y}-Q{q}", f"{y} Q{q}") for y, q in quarter_choices()]
    if form.get("quarter") and form["quarter"] not in {v for v, _ in quarters}:
        quarters.insert(0, (form["quarter"], form["quarter"].replace("-", " ")))
    return {"owner_options": [("", "Nobody yet")] + [(str(u.id), u.name) for u in tech.list_staff(session)],
            "status_options": [(s.value, label) for s, label in tech.STATUS_LABELS.items()],
            "quarter_options": [("", "No quarter"), *quarters]}


@router.get("/tech/new", response_class=HTMLResponse)
async def new_initiative(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = {"status": InitiativeStatus.proposed.value, "owner_id": str(user.id)}
    return render(request, "admin/tech/new.html", {"form": form, "errors": {}, **_form_context(session, form)})


@router.post("/tech", response_class=HTMLResponse)
async def create_initiative(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, tech.InitiativeForm)
    try:
        data = form.resolve(partial(tech.resolve_initiative, session))
    except FormInvalid as exc:
        return render(request, "admin/tech/new.html", {"form": form.typed, "errors": exc.errors,
                                                       **_form_context(session, form.typed)}, status_code=422)
    initiative = tech.create_initiative(session, data=data, actor=user)
    return redirect(request, _url(initiative),
                    flash=f"Initiative “{initiative.title}” created. Link the items it delivers and its issues below.")


def _initiative_page(request: Request, session: Session, initiative: Initiative, *, form: dict[str, Any] | None = None,
                     errors: dict[str, str] | None = None, link_form: dict[str, Any] | None = None,
                     link_errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    links = tech.links_of_initiatives(session, [initiative.id])[initiative.id]
    form = form if form is not None else _form_of(initiative)
    return render(request, "admin/tech/initiative.html", {
        "initiative": initiative, "form": form, "errors": errors or {}, "links": links,
        "progress": tech.progress_of(links), "demand": tech.demand_for(session, [initiative])[initiative.id],
        "regressions": tech.item_regressions(session, initiative.items),
        "item_choices": tech.item_choices(session, exclude=[i.id for i in initiative.items]),
        "link_form": link_form or {}, "link_errors": link_errors or {}, "kind_labels": trackers.KIND_LABELS,
        "status_labels": tech.STATUS_LABELS, **_form_context(session, form),
    }, status_code=status_code)


@router.get("/tech/{initiative_id:int}", response_class=HTMLResponse)
async def edit_initiative(request: Request, session: DbSession, initiative_id: int) -> Response:
    return _initiative_page(request, session, tech.get_initiative(session, initiative_id))


@router.post("/tech/{initiative_id:int}", response_class=HTMLResponse)
async def update_initiative(request: Request, session: DbSession, user: StaffUser, initiative_id: int) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    form = await read_form(request, tech.InitiativeForm)
    try:
        data = form.resolve(partial(tech.resolve_initiative, session))
    except FormInvalid as exc:
        return _initiative_page(request, session, initiative, form=form.typed, errors=exc.errors, status_code=422)
    changed = tech.update_initiative(session, initiative=initiative, data=data, actor=user)
    return redirect(request, _url(initiative), flash="Changes saved." if changed else "Nothing changed.",
                    kind="success" if changed else "info")


@router.post("/tech/{initiative_id:int}/delete", response_class=HTMLResponse)
async def delete_initiative(request: Request, session: DbSession, user: StaffUser, initiative_id: int) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    title = initiative.title
    tech.delete_initiative(session, initiative=initiative, actor=user)
    return redirect(request, "/admin/tech", flash=f"Initiative “{title}” deleted, with its backlog links.")


@router.post("/tech/{initiative_id:int}/items", response_class=HTMLResponse)
async def link_item(request: Request, session: DbSession, user: StaffUser, initiative_id: int) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    raw = (await request.form()).get("item")
    public_id = raw if isinstance(raw, str) and len(raw) <= 16 else ""
    try:
        item = roadmap.get_item_for_staff(session, public_id) if public_id else None
    except NotFound:  # deleted since the page was read
        item = None
    if item is None:
        return redirect(request, _url(initiative), flash="Choose an item to link.", kind="error")
    if not tech.link_item(session, initiative=initiative, item=item, actor=user):
        return redirect(request, _url(initiative), flash=f"“{item.title}” is linked already.", kind="info")
    return redirect(request, _url(initiative), flash=f"Linked “{item.title}”: this initiative delivers it.")


@router.post("/tech/{initiative_id:int}/items/{public_id}/remove", response_class=HTMLResponse)
async def unlink_item(request: Request, session: DbSession, user: StaffUser, initiative_id: int,
                      public_id: Annotated[str, Path(max_length=16)]) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    item_id = next((i.id for i in initiative.items if i.public_id == public_id), None)
    removed = tech.unlink_item(session, initiative=initiative, item_id=item_id or 0, actor=user)
    if removed is None:
        return redirect(request, _url(initiative), flash="That item is not linked.", kind="info")
    return redirect(request, _url(initiative), flash=f"Unlinked “{removed.title}”.")


@router.post("/tech/{initiative_id:int}/links", response_class=HTMLResponse)
async def add_initiative_link(request: Request, session: DbSession, user: StaffUser, initiative_id: int) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    form = await read_form(request, tech.LinkForm)
    try:
        link = tech.add_link(session, data=form.valid(), actor=user, initiative=initiative)
    except FormInvalid as exc:
        return _initiative_page(request, session, initiative, link_form=form.typed, link_errors=exc.errors,
                                status_code=422)
    return redirect(request, _url(initiative) + "#links",
                    flash=f"Linked {trackers.KIND_LABELS[link.kind]} {link.key}.")


@router.post("/tech/{initiative_id:int}/links/{link_id:int}/remove", response_class=HTMLResponse)
async def remove_initiative_link(request: Request, session: DbSession, user: StaffUser, initiative_id: int,
                                 link_id: int) -> Response:
    initiative = tech.get_initiative(session, initiative_id)
    link = tech.get_link(session, link_id, initiative=initiative)
    key = link.key
    tech.remove_link(session, link=link, actor=user)
    return redirect(request, _url(initiative) + "#links", flash=f"Removed the link to {key}.")


# --- on an item's page ----------------------------------------------------------------------------------


def _item_url(item: Item) -> str:
    return f"/admin/items/{item.public_id}#delivery"


@router.post("/items/{public_id}/links", response_class=HTMLResponse)
async def add_item_link(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    form = await read_form(request, tech.LinkForm)
    try:
        link = tech.add_link(session, data=form.valid(), actor=user, item=item)
    except FormInvalid as exc:
        return item_pages.render_edit_page(request, session, item, extra={"link_form": form.typed,
                                                                          "link_errors": exc.errors})
    return redirect(request, _item_url(item), flash=f"Linked {trackers.KIND_LABELS[link.kind]} {link.key}.")


@router.post("/items/{public_id}/links/{link_id:int}/remove", response_class=HTMLResponse)
async def remove_item_link(request: Request, session: DbSession, user: StaffUser, public_id: str,
                           link_id: int) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    link = tech.get_link(session, link_id, item=item)
    key = link.key
    tech.remove_link(session, link=link, actor=user)
    return redirect(request, _item_url(item), flash=f"Removed the link to {key}.")


@router.post("/items/{public_id}/delivery", response_class=HTMLResponse)
async def item_delivery(request: Request, session: DbSession, user: StaffUser, public_id: str) -> Response:
    item = roadmap.get_item_for_staff(session, public_id)
    form = await read_form(request, tech.DeliveryForm)
    try:
        saved = tech.set_delivery(session, item=item, data=form.valid(), actor=user)
    except FormInvalid as exc:
        return item_pages.render_edit_page(request, session, item, extra={"delivery_form": form.typed,
                                                                          "delivery_errors": exc.errors})
    if not saved.changed:
        return redirect(request, _item_url(item), flash="Nothing changed.", kind="info")
    flash = "Delivery settings saved."
    if saved.moved:
        flash += f" {saved.moved[:-1]}: its linked work already says so."
    return redirect(request, _item_url(item), flash=flash)


# --- import ---------------------------------------------------------------------------------------------

IMPORT_LIMIT = 500_000  # characters: well within the body cap, a few thousand rows


def _import_page(request: Request, *, text: str = "", plan: tech.ImportPlan | None = None, error: str = "",
                 status_code: int = 200) -> Response:
    return render(request, "admin/tech/import.html", {"text": text, "plan": plan, "error": error,
                                                      "kind_labels": trackers.KIND_LABELS}, status_code=status_code)


@router.get("/tech/import", response_class=HTMLResponse)
async def import_form(request: Request) -> Response:
    return _import_page(request)


@router.post("/tech/import", response_class=HTMLResponse)
async def import_csv(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await request.form()
    raw, action = form.get("csv"), form.get("action")
    text = raw if isinstance(raw, str) else ""
    if not text.strip():
        return _import_page(request, error="Paste the CSV first.", status_code=422)
    if len(text) > IMPORT_LIMIT:
        return _import_page(request, text=text[:IMPORT_LIMIT], status_code=422,
                            error=f"Keep it to {IMPORT_LIMIT:,} characters (it has {len(text):,}); import in parts.")
    plan = tech.plan_import(session, text)
    if action != "import" or plan.errors:
        return _import_page(request, text=text, plan=plan, status_code=422 if plan.errors else 200)
    made, links = tech.apply_import(session, plan, actor=user)
    return redirect(request, "/admin/tech", flash=f"Imported {links} backlog link{'' if links == 1 else 's'} and "
                                                  f"{made} new initiative{'' if made == 1 else 's'}.")


# --- tracker webhooks -----------------------------------------------------------------------------------


def _hook_address(request: Request, hook: TrackerHook, secret: str | None = None) -> str:
    base = request.app.state.settings.base_url.rstrip("/")
    address = f"{base}/hooks/{hook.kind.value}/{hook.public_id}"
    if hook.kind is HookKind.jira:
        address += f"/{secret}" if secret else "/<secret>"
    return address


def _hooks_page(request: Request, session: Session, *, created: dict[str, str] | None = None,
                form: dict[str, Any] | None = None, errors: dict[str, str] | None = None,
                status_code: int = 200) -> Response:
    hooks = tech.list_hooks(session)
    return render(request, "admin/tech/hooks.html", {
        "hooks": hooks, "addresses": {h.id: _hook_address(request, h) for h in hooks},
        "deliveries": tech.list_deliveries(session), "created": created, "form": form or {"kind": "github"},
        "errors": errors or {}, "hook_labels": trackers.HOOK_LABELS,
        "kind_options": [(k.value, label) for k, label in trackers.HOOK_LABELS.items()],
        "tracker_options": [("", "Choose…")]
                           + [(k.value, label) for k, label in trackers.KIND_LABELS.items()],
        "reach": {h.id: tech.hook_reach(h) for h in hooks}, "refused": tech.refusals_by_hook(session),
        "refusals_kept": REFUSALS_KEPT,
        "generic_header": trackers.GENERIC_HEADER,
    }, status_code=status_code, headers={"Cache-Control": "no-store"})  # it may show a new webhook's secret


@router.get("/tech/hooks", response_class=HTMLResponse)
async def hooks(request: Request, session: DbSession) -> Response:
    return _hooks_page(request, session)


@router.post("/tech/hooks", response_class=HTMLResponse)
async def create_hook(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, tech.HookForm)
    if form.data is None:
        return _hooks_page(request, session, form=form.typed, errors=form.errors, status_code=422)
    try:
        hook = tech.create_hook(session, data=form.data, actor=user)
    except FormInvalid as exc:
        return _hooks_page(request, session, form=form.typed, errors=exc.errors, status_code=422)
    secret = tech.hook_secret(request.app.state.settings.secret_key, hook)
    # Shown on this answer only (never in a flash cookie, never again): the page says to copy it now.
    created = {"name": hook.name, "kind": trackers.HOOK_LABELS[hook.kind],
               "address": _hook_address(request, hook, secret), "secret": secret if hook.kind is not HookKind.jira else ""}
    return _hooks_page(request, session, created=created)


@router.post("/tech/hooks/{hook_id:int}/delete", response_class=HTMLResponse)
async def delete_hook(request: Request, session: DbSession, user: StaffUser, hook_id: int) -> Response:
    hook = tech.get_hook(session, hook_id)
    name = hook.name
    tech.delete_hook(session, hook=hook, actor=user)
    return redirect(request, "/admin/tech/hooks", flash=f"Webhook “{name}” deleted. Its deliveries are refused from now on.")
