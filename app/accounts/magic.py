"""Email magic links: a single-use sign-in link, valid 15 minutes, confirmed with a POST."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.security import verify_csrf

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
