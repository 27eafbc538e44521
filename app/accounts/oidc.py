"""OpenID Connect sign-in through Authlib: discovery, authorization code + PKCE, ID token checks."""

from __future__ import annotations

from fastapi import APIRouter, Depends

from app.security import verify_csrf

router = APIRouter(include_in_schema=False, dependencies=[Depends(verify_csrf)])
