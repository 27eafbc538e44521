"""CSV files that spreadsheet programs open correctly and safely, written as they are sent.

UTF-8 with a byte order mark (Excel reads UTF-8 only with it), RFC 4180 records (CRLF line ends, fields
with a comma, quote or line break quoted, quotes doubled), and text that a spreadsheet would run as a
formula neutralised: a text cell beginning with =, +, -, @, a tab or a carriage return gets a leading
apostrophe (the OWASP advice on CSV injection). Numbers are written as numbers and are never prefixed.
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

BOM = "\ufeff"
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
MEDIA_TYPE = "text/csv; charset=utf-8"


def neutralise(value: str) -> str:
    return "'" + value if value.startswith(FORMULA_STARTS) else value


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, str):
        return neutralise(value)
    return value


def lines(rows: Iterable[Sequence[Any]]) -> str:
    """Rows as RFC 4180 records, text neutralised."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    for row in rows:
        writer.writerow([_cell(v) for v in row])
    return buffer.getvalue()


def stream(header: Sequence[str], chunks: Iterator[Iterable[Sequence[Any]]]) -> Iterator[bytes]:
    """The file in pieces: the BOM and header first, then one piece per chunk of rows."""
    yield (BOM + lines([header])).encode()
    for chunk in chunks:
        yield lines(chunk).encode()


async def astream(pieces: Iterator[bytes]) -> AsyncIterator[bytes]:
    """The pieces for a StreamingResponse, read on the event loop's thread like the rest of a request's
    database work (a sync iterator would be read in a thread pool, away from the session's connection)."""
    for piece in pieces:
        yield piece


def disposition(filename: str) -> str:
    return f'attachment; filename="{filename}"'
