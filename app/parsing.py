"""Values people and other systems type, checked without any web framework: text without the characters
PostgreSQL refuses, integers in ASCII digits within a column's range. Services use these; the request-level
guards built on them (a middleware, the JSON and path checks) are in app/inputs.py.
"""

from __future__ import annotations

import re
from dataclasses import fields, is_dataclass, replace
from typing import Any, TypeVar

from pydantic import BeforeValidator

_Claims = TypeVar("_Claims")

INT32_MAX = 2**31 - 1  # PostgreSQL `integer`: every id column, and most counts

# C0 controls but tab, LF and CR; the bidirectional embedding, override and isolate controls (invisible,
# and one in a person's text reverses the app's text printed after it); and the surrogate range, which
# only ever arrives unpaired in a str.
_BAD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
# The same rule for an OpenAPI description (JSON Schema `pattern`; surrogates cannot be written in it).
TEXT_PATTERN = r"^[^\x00-\x08\x0B\x0C\x0E-\x1F]*$"
BAD_CHARS_MESSAGE = "Contains a control character or an unpaired surrogate; remove it and send the text again."


def has_bad_chars(text: str) -> bool:
    return _BAD_CHARS.search(text) is not None


def clean_text(text: str) -> str:
    """The text without the characters the database refuses or nobody means to type."""
    return _BAD_CHARS.sub("", text)


def clean_value(value: Any) -> Any:
    """Strings cleaned inside any JSON-like value (dicts, lists, tuples); other values unchanged."""
    if isinstance(value, str):
        return value if not has_bad_chars(value) else clean_text(value)  # an enum member stays one
    if isinstance(value, dict):
        return {clean_value(k): clean_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(clean_value(v) for v in value)
    return value


def clean_identity_claims(claims: _Claims) -> _Claims:
    """What a sign-in service said about a person (a dataclass of claims), every string in it cleaned.

    Claims come from another system's JSON: a NUL in a name would fail the sign-in with a 500 on
    PostgreSQL, and the person can do nothing about it.
    """
    assert is_dataclass(claims) and not isinstance(claims, type)
    return replace(claims, **{f.name: clean_value(getattr(claims, f.name)) for f in fields(claims)})


_ASCII_INT = re.compile(r"[+-]?[0-9]{1,18}")
_QUERY_INT = re.compile(r"-?[0-9]+")
_QUERY_INT_DIGITS = 40  # more digits than any bound needs; a longer one is refused before int() reads it


def parse_int(raw: Any, *, minimum: int = 0, maximum: int = INT32_MAX) -> int | None:
    """An integer from a query string, a form or a claim: ASCII digits with an optional sign, within
    [minimum, maximum]; None for anything else.

    int() also takes '١٢' (Arabic-Indic digits) and str.isdigit() says yes to '²', which int() then
    refuses: both made 500s. The default range is what an id column holds.
    """
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        value = raw
    else:
        text = str(raw if raw is not None else "").strip()
        if not _ASCII_INT.fullmatch(text):
            return None
        value = int(text)
    return value if minimum <= value <= maximum else None


def _whole_number_in_ascii_digits(value: Any) -> Any:
    if isinstance(value, str):
        if not _QUERY_INT.fullmatch(value):
            raise ValueError("Give a whole number in the digits 0-9.")
        if len(value.lstrip("-")) > _QUERY_INT_DIGITS:
            raise ValueError("That number is far too large.")
        # a number of 19 to 40 digits is a number all the same: the parameter's own bounds say what it may be (a
        # walk-through's page=99999999999999999999 was told to use digits)
    return value


# For integer query parameters: pydantic's lax mode reads "1_0" as 10 and takes "+2", " 1" and "2.0" too.
# Annotated[int, Query(...), ASCII_DIGITS] (Query first, or its bounds leave the OpenAPI schema) accepts
# an optional minus and ASCII digits only, as parse_int does.
ASCII_DIGITS = BeforeValidator(_whole_number_in_ascii_digits)
