"""Host-app SSO: a vendor signs its logged-in user straight in with a short-lived signed JWT."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.security import verify_csrf

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
