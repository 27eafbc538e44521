"""Timeframes, and placing target quarters on the Now / Next / Later horizon.

Pure date arithmetic with no import from app: the item model uses it (Item.horizon).
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum


class Timeframe(StrEnum):
    now = "now"
    next = "next"
    later = "later"
    quarter = "quarter"


def timeframe_label(timeframe: Timeframe, year: int | None, quarter: int | None) -> str:
    """How a timeframe reads: "2027 Q1" for a target quarter, else "Now", "Next" or "Later"."""
    if timeframe is Timeframe.quarter and year and quarter:
        return f"{year} Q{quarter}"
    if timeframe is Timeframe.quarter:
        return "Later"
    return timeframe.value.capitalize()


def current_quarter(today: date | None = None) -> tuple[int, int]:
    today = today or date.today()
    return today.year, (today.month - 1) // 3 + 1


def horizon_of_quarter(year: int | None, quarter: int | None, today: date | None = None) -> Timeframe:
    """The current quarter (or an overdue one) is Now, the next two quarters Next, further Later."""
    if not year or not quarter:
        return Timeframe.later
    cy, cq = current_quarter(today)
    distance = (year - cy) * 4 + (quarter - cq)
    if distance <= 0:
        return Timeframe.now
    if distance <= 2:
        return Timeframe.next
    return Timeframe.later


def quarter_choices(today: date | None = None, count: int = 8) -> list[tuple[int, int]]:
    year, quarter = current_quarter(today)
    out = []
    for _ in range(count):
        out.append((year, quarter))
        quarter += 1
        if quarter > 4:
            year, quarter = year + 1, 1
    return out
