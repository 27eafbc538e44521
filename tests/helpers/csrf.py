"""The CSRF token as pages carry it: masked afresh in each answer (app/security.py `masked`), so that two answers of
the same page differ there and nowhere else."""

from __future__ import annotations

import re

from app.security import unmasked
from tests.helpers.http import CSRF_META

MASKED = re.compile(r"(?<![0-9a-f])[0-9a-f]{128}(?![0-9a-f])")


def unmasked_tokens(text: str | bytes) -> str:
    """The page with every masked token in it replaced by the token it stands for."""
    page = text.decode() if isinstance(text, bytes) else text
    return MASKED.sub(lambda found: unmasked(found.group()) or found.group(), page)


def page_token(page: str) -> str:
    """The token of the page's `<meta name="csrf-token">`, as the page carries it (masked)."""
    match = CSRF_META.search(page)
    assert match is not None, "no CSRF token on the page"
    return match.group(1)
