"""/me: the customer's own page, data export and account deletion."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.security import verify_csrf

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
