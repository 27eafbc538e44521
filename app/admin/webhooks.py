"""Webhooks (admins only): endpoints, the private-address setting, the delivery log, a test event, redelivery.

app/admin/router.py includes this router in the admin router (staff only, CSRF-checked, under /admin); every
route here also takes `AdminUser` (a product manager gets the 404 of a missing page).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy.orm import Session

from app.deps import AdminUser, DbSession
from app.forms import FormModel, checkbox, read_form
from app.parsing import ASCII_DIGITS
from app.web import redirect, render
from app.webhooks import service as webhooks
from app.webhooks.models import WebhookEndpoint

router = APIRouter(include_in_schema=False)

Id = Annotated[int, Path(ge=1, le=2_147_483_647), ASCII_DIGITS]


class PrivateTargets(FormModel):
    allow_private: Annotated[bool, checkbox()] = False


def _list_page(request: Request, session: Session, **extra: Any) -> Response:
    endpoints = webhooks.list_endpoints(session)
    return render(request, "admin/webhooks/list.html", {
        "endpoints": endpoints, "allow_private": webhooks.allow_private_targets(session),
        "refused": {e.id: webhooks.refused_address(session, e.url) for e in endpoints},
        "events": webhooks.EVENTS, **extra})


def _endpoint_page(request: Request, session: Session, endpoint: WebhookEndpoint | None, *,
                   form: dict[str, Any], errors: dict[str, str] | None = None, status_code: int = 200) -> Response:
    return render(request, "admin/webhooks/edit.html", {
        "endpoint": endpoint, "form": form, "errors": errors or {}, "events": webhooks.EVENTS,
        "deliveries": webhooks.list_deliveries(session, endpoint=endpoint) if endpoint else [],
        "refused_address": webhooks.refused_address(session, endpoint.url) if endpoint else None,
    }, status_code=status_code)


def _form_of(endpoint: WebhookEndpoint) -> dict[str, Any]:
    return {"url": endpoint.url, "description": endpoint.description, "events": list(endpoint.events),
            "is_active": "1" if endpoint.is_active else ""}


@router.get("/webhooks", response_class=HTMLResponse)
async def endpoint_list(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _list_page(request, session)


@router.post("/webhooks/settings", response_class=HTMLResponse)
async def save_settings(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = (await read_form(request, PrivateTargets)).valid()
    if not webhooks.set_allow_private_targets(session, allow=form.allow_private, actor=admin):
        return redirect(request, "/admin/webhooks", flash="Nothing changed.", kind="info")
    return redirect(request, "/admin/webhooks", flash=(
        "Webhooks may now call private, loopback and link-local addresses." if form.allow_private else
        "Webhooks call public addresses only."))


@router.get("/webhooks/new", response_class=HTMLResponse)
async def new_endpoint(request: Request, session: DbSession, admin: AdminUser) -> Response:
    return _endpoint_page(request, session, None, form={"events": [], "is_active": "1"})


@router.post("/webhooks", response_class=HTMLResponse)
async def create_endpoint(request: Request, session: DbSession, admin: AdminUser) -> Response:
    form = await read_form(request, webhooks.EndpointCreate)
    if form.data is None:
        return _endpoint_page(request, session, None, form=form.typed, errors=form.errors, status_code=422)
    endpoint = webhooks.create_endpoint(session, data=form.data, actor=admin)
    return redirect(request, f"/admin/webhooks/{endpoint.id}", flash=(
        "Webhook added. Give its signing secret to the receiver, then send a test event."))


@router.get("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def edit_endpoint(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    return _endpoint_page(request, session, endpoint, form=_form_of(endpoint))


@router.post("/webhooks/{endpoint_id}", response_class=HTMLResponse)
async def update_endpoint(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    form = await read_form(request, webhooks.EndpointCreate)
    if form.data is None:
        return _endpoint_page(request, session, endpoint, form=form.typed, errors=form.errors, status_code=422)
    if not webhooks.update_endpoint(session, endpoint=endpoint, data=form.data, actor=admin):
        return redirect(request, f"/admin/webhooks/{endpoint.id}", flash="Nothing changed.", kind="info")
    return redirect(request, f"/admin/webhooks/{endpoint.id}", flash="Changes saved.")


@router.post("/webhooks/{endpoint_id}/test", response_class=HTMLResponse)
async def send_test(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    webhooks.send_test(session, endpoint=endpoint, actor=admin)
    return redirect(request, f"/admin/webhooks/{endpoint.id}", flash=(
        "Test event queued: it is sent within a few seconds. Reload this page to see it in the log."))


@router.post("/webhooks/{endpoint_id}/secret", response_class=HTMLResponse)
async def rotate_secret(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    webhooks.rotate_secret(session, endpoint=endpoint, actor=admin)
    return redirect(request, f"/admin/webhooks/{endpoint.id}", flash=(
        "New signing secret made. Calls from now on are signed with it: give it to the receiver."))


@router.post("/webhooks/{endpoint_id}/delete", response_class=HTMLResponse)
async def delete_endpoint(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    url = endpoint.url
    webhooks.delete_endpoint(session, endpoint=endpoint, actor=admin)
    return redirect(request, "/admin/webhooks", flash=f"Deleted the webhook to {url} and its delivery log.")


@router.post("/webhooks/{endpoint_id}/deliveries/{delivery_id}/redeliver", response_class=HTMLResponse)
async def redeliver(request: Request, session: DbSession, admin: AdminUser, endpoint_id: Id,
                    delivery_id: Id) -> Response:
    endpoint = webhooks.get_endpoint(session, endpoint_id)
    delivery = webhooks.get_delivery(session, endpoint=endpoint, delivery_id=delivery_id)
    webhooks.redeliver(session, delivery=delivery)
    return redirect(request, f"/admin/webhooks/{endpoint.id}", flash=(
        f"{delivery.event_type} queued again with the same webhook-id: it is sent within a few seconds."))
