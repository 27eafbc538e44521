"""Lists shown a page at a time: how many pages a total makes. Every paged list (the board's stage lists, the
changelog, a discussion, the admin's lists, the desk) counts its pages this one way."""

from __future__ import annotations


def pages_of(total: int, per_page: int) -> int:
    """How many pages `total` rows make, `per_page` to a page (1 when there are none: an empty list still has its
    page)."""
    return max(1, -(-total // per_page))
