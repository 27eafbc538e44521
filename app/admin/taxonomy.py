"""Products, stages and tags: how items are sorted on the roadmap (every staff member).

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import DbSession, StaffUser
from app.errors import Conflict, FormInvalid
from app.forms import FormModel, choice, read_form
from app.roadmap import service as roadmap
from app.roadmap.models import Product, Stage, Tag
from app.web import redirect, render

router = APIRouter(include_in_schema=False)


# --- products -------------------------------------------------------------------------------------------


def _products_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "admin/products.html", {
        "products": roadmap.list_products(session), "counts": roadmap.count_items_per_product(session), **extra,
    }, status_code=status_code)


def _product_page(request: Request, session: Session, product: Product, *, status_code: int = 200,
                  **extra: Any) -> Response:
    extra.setdefault("form", {"name": product.name, "description": product.description})
    return render(request, "admin/product.html", {
        "product": product, "item_count": roadmap.count_items_per_product(session).get(product.id, 0), **extra,
    }, status_code=status_code)


@router.get("/products", response_class=HTMLResponse)
async def products(request: Request, session: DbSession) -> Response:
    return _products_page(request, session)


@router.post("/products", response_class=HTMLResponse)
async def create_product(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, roadmap.ProductCreate)
    if form.data is None:
        return _products_page(request, session, status_code=422, errors=form.errors, form=form.typed)
    product = roadmap.create_product(session, data=form.data, actor=user)
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” created.")


@router.get("/products/{product_id:int}", response_class=HTMLResponse)
async def edit_product(request: Request, session: DbSession, product_id: int) -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    return _product_page(request, session, product)


@router.post("/products/{product_id:int}", response_class=HTMLResponse)
async def update_product(request: Request, session: DbSession, user: StaffUser, product_id: int) -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    form = await read_form(request, roadmap.ProductUpdate)
    if form.data is None:
        return _product_page(request, session, product, status_code=422, errors=form.errors, form=form.typed)
    roadmap.update_product(session, product=product, data=form.data, actor=user)
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” saved.")


@router.post("/products/{product_id:int}/delete", response_class=HTMLResponse)
async def delete_product(request: Request, session: DbSession, user: StaffUser, product_id: int) -> Response:
    product = roadmap.get_by_id(session, Product, product_id)
    try:
        roadmap.delete_product(session, product=product, actor=user)
    except Conflict as exc:
        return _product_page(request, session, product, status_code=409, problem=exc.detail)
    return redirect(request, "/admin/products", flash=f"Product “{product.name}” deleted.")


# --- stages ---------------------------------------------------------------------------------------------


def _stage_form(stage: Stage) -> dict[str, Any]:
    return {"name": stage.name, "is_released": stage.is_released, "is_closed": stage.is_closed,
            "on_board": stage.on_board}


def _stages_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"on_board": True})
    return render(request, "admin/stages.html", {
        "stages": roadmap.list_stages(session), "counts": roadmap.count_items_per_stage(session), **extra,
    }, status_code=status_code)


def _stage_page(request: Request, session: Session, stage: Stage, *, status_code: int = 200,
                **extra: Any) -> Response:
    extra.setdefault("form", _stage_form(stage))
    return render(request, "admin/stage.html", {
        "stage": stage, "item_count": roadmap.count_items_per_stage(session).get(stage.id, 0), **extra,
    }, status_code=status_code)


@router.get("/stages", response_class=HTMLResponse)
async def stages(request: Request, session: DbSession) -> Response:
    return _stages_page(request, session)


@router.post("/stages", response_class=HTMLResponse)
async def create_stage(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, roadmap.StageCreate)
    if form.data is None:
        return _stages_page(request, session, status_code=422, errors=form.errors, form=form.typed)
    stage = roadmap.create_stage(session, data=form.data, actor=user)
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” added at the end.")


@router.get("/stages/{stage_id:int}", response_class=HTMLResponse)
async def edit_stage(request: Request, session: DbSession, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    return _stage_page(request, session, stage)


@router.post("/stages/{stage_id:int}", response_class=HTMLResponse)
async def update_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    form = await read_form(request, roadmap.StageUpdate)
    if form.data is None:
        return _stage_page(request, session, stage, status_code=422, errors=form.errors, form=form.typed)
    roadmap.update_stage(session, stage=stage, data=form.data, actor=user)
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” saved.")


class Direction(StrEnum):
    up = "up"
    down = "down"


class StageMove(FormModel):
    """The ↑ and ↓ buttons of the stages list: which way the stage moves."""

    direction: Annotated[Direction, choice(Direction, "Choose to move the stage up or down.")] = Direction.up


@router.post("/stages/{stage_id:int}/move", response_class=HTMLResponse)
async def move_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    form = await read_form(request, StageMove)
    if form.data is None:
        return redirect(request, "/admin/stages", flash=" ".join(form.errors.values()), kind="error")
    up = form.data.direction is Direction.up
    roadmap.move_stage_position(session, stage=stage, direction=-1 if up else 1, actor=user)
    where = "earlier" if up else "later"
    return redirect(request, "/admin/stages", flash=f"“{stage.name}” moved {where}.")


@router.post("/stages/{stage_id:int}/delete", response_class=HTMLResponse)
async def delete_stage(request: Request, session: DbSession, user: StaffUser, stage_id: int) -> Response:
    stage = roadmap.get_by_id(session, Stage, stage_id)
    try:
        roadmap.delete_stage(session, stage=stage, actor=user)
    except Conflict as exc:
        return _stage_page(request, session, stage, status_code=409, problem=exc.detail)
    return redirect(request, "/admin/stages", flash=f"Stage “{stage.name}” deleted.")


# --- tags -----------------------------------------------------------------------------------------------


def _tags_page(request: Request, session: Session, *, status_code: int = 200, **extra: Any) -> Response:
    return render(request, "admin/tags.html", {
        "tags": roadmap.list_tags(session), "counts": roadmap.count_items_per_tag(session), **extra,
    }, status_code=status_code)


def _tag_page(request: Request, session: Session, tag: Tag, *, status_code: int = 200, **extra: Any) -> Response:
    extra.setdefault("form", {"name": tag.name})
    return render(request, "admin/tag.html", {
        "tag": tag, "item_count": roadmap.count_items_per_tag(session).get(tag.id, 0), **extra,
    }, status_code=status_code)


@router.get("/tags", response_class=HTMLResponse)
async def tags(request: Request, session: DbSession) -> Response:
    return _tags_page(request, session)


@router.post("/tags", response_class=HTMLResponse)
async def create_tag(request: Request, session: DbSession, user: StaffUser) -> Response:
    form = await read_form(request, roadmap.TagCreate)
    try:
        tag = roadmap.create_tag(session, data=form.valid(), actor=user)
    except FormInvalid as exc:
        return _tags_page(request, session, status_code=422, errors=exc.errors, form=form.typed)
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” created.")


@router.get("/tags/{tag_id:int}", response_class=HTMLResponse)
async def edit_tag(request: Request, session: DbSession, tag_id: int) -> Response:
    return _tag_page(request, session, roadmap.get_by_id(session, Tag, tag_id))


@router.post("/tags/{tag_id:int}", response_class=HTMLResponse)
async def update_tag(request: Request, session: DbSession, user: StaffUser, tag_id: int) -> Response:
    tag = roadmap.get_by_id(session, Tag, tag_id)
    form = await read_form(request, roadmap.TagUpdate)
    try:
        roadmap.update_tag(session, tag=tag, data=form.valid(), actor=user)
    except FormInvalid as exc:
        return _tag_page(request, session, tag, status_code=422, errors=exc.errors, form=form.typed)
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” saved.")


@router.post("/tags/{tag_id:int}/delete", response_class=HTMLResponse)
async def delete_tag(request: Request, session: DbSession, user: StaffUser, tag_id: int) -> Response:
    tag = roadmap.get_by_id(session, Tag, tag_id)
    count = roadmap.count_items_per_tag(session).get(tag.id, 0)
    roadmap.delete_tag(session, tag=tag, actor=user)
    removed = f" It was removed from {count} item{'' if count == 1 else 's'}." if count else ""
    return redirect(request, "/admin/tags", flash=f"Tag “{tag.name}” deleted.{removed}")
